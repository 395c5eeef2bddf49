//! R4 element definitions as data: each resource's and complex datatype's elements with their
//! type codes and cardinality (`data/element-types.json`, derived from the official
//! StructureDefinitions by `scripts/derive-fhir-tables.py`). `element_type` answers for any
//! element path; `Graph` is the same table linked into nodes for walking JSON (validation).

use std::{collections::HashMap, sync::LazyLock};

use rustc_hash::FxHashMap;

const ELEMENT_TYPES: &str = include_str!("data/element-types.json");

/// type name -> element path relative to the type -> spec (`*` when repeating, then the type
/// codes joined by `|`, or `@path` for a contentReference within the same type).
type Table = HashMap<&'static str, HashMap<&'static str, &'static str>>;

static TABLE: LazyLock<Table> =
    LazyLock::new(|| serde_json::from_str(ELEMENT_TYPES).expect("the derived element table is JSON"));

static GRAPH: LazyLock<Graph> = LazyLock::new(|| Graph::build(&TABLE));

/// One element's definition, as `element_type` finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElementType {
    /// The defining element (`Observation.value[x]`; `Questionnaire.item` for `item.item`).
    pub definition: String,
    /// FHIR type codes: a primitive (`dateTime`), a complex type (`Quantity`), `BackboneElement`
    /// or `Element` for a nested group, `Resource`, or a resource type. A choice element named
    /// by one of its types (`valueQuantity`) has only that one.
    pub types: Vec<&'static str>,
    /// Whether the element repeats (max `*`): a JSON array.
    pub many: bool,
}

/// The definition of `path` (dot-separated, from the type: `name.given`, `component.value[x]`,
/// `valueQuantity.unit`, `item.item.text`) in the resource or complex type `type_name`.
/// Paths continue into complex types and through contentReferences; None when there is no
/// such element.
pub fn element_type(type_name: &str, path: &str) -> Option<ElementType> {
    let mut owner: &'static str = TABLE.get_key_value(type_name)?.0;
    let mut prefix = String::new();
    let mut segments = path.split('.').peekable();
    loop {
        let segment = segments.next()?;
        let elements = &TABLE[owner];
        let (name, spec, choice) = lookup(elements, &prefix, segment)?;
        let many = spec.starts_with('*');
        let spec = spec.trim_start_matches('*');
        let (defined_at, types) = match spec.strip_prefix('@') {
            Some(target) => (target.to_owned(), split_codes(elements.get(target)?)),
            None => (name, choice.map_or_else(|| split_codes(spec), |code| vec![code])),
        };
        if segments.peek().is_none() {
            return Some(ElementType { definition: format!("{owner}.{defined_at}"), types, many });
        }
        match types.as_slice() {
            [nested] if matches!(*nested, "BackboneElement" | "Element") => prefix = format!("{defined_at}."),
            [complex] => {
                owner = TABLE.get_key_value(complex)?.0;
                prefix.clear();
            }
            _ => return None,
        }
    }
}

fn split_codes(spec: &'static str) -> Vec<&'static str> {
    spec.trim_start_matches('*').split('|').collect()
}

/// Finds `segment` under `prefix`: an element by its name (`value[x]` for a choice), or a
/// choice by one of its JSON names (`valueQuantity`, which gives that one type code).
fn lookup(
    elements: &HashMap<&'static str, &'static str>,
    prefix: &str,
    segment: &str,
) -> Option<(String, &'static str, Option<&'static str>)> {
    let name = format!("{prefix}{segment}");
    if let Some(spec) = elements.get(name.as_str()) {
        return Some((name, spec, None));
    }
    (1..segment.len()).filter(|&i| segment.is_char_boundary(i)).find_map(|i| {
        let choice = format!("{prefix}{}[x]", &segment[..i]);
        let spec = elements.get(choice.as_str())?;
        let code = split_codes(spec).into_iter().find(|code| upper_first(code) == segment[i..])?;
        Some((choice, *spec, Some(code)))
    })
}

/// `dateTime` -> `DateTime`: how a choice element's JSON name ends for each of its types.
fn upper_first(code: &str) -> String {
    let mut chars = code.chars();
    chars.next().map(|c| c.to_ascii_uppercase().to_string() + chars.as_str()).unwrap_or_default()
}

/// The R4 primitive datatypes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Primitive {
    Base64Binary,
    Boolean,
    Canonical,
    Code,
    Date,
    DateTime,
    Decimal,
    Id,
    Instant,
    Integer,
    Markdown,
    Oid,
    PositiveInt,
    String,
    Time,
    UnsignedInt,
    Uri,
    Url,
    Uuid,
    Xhtml,
}

impl Primitive {
    pub const ALL: [Primitive; 20] = [
        Self::Base64Binary,
        Self::Boolean,
        Self::Canonical,
        Self::Code,
        Self::Date,
        Self::DateTime,
        Self::Decimal,
        Self::Id,
        Self::Instant,
        Self::Integer,
        Self::Markdown,
        Self::Oid,
        Self::PositiveInt,
        Self::String,
        Self::Time,
        Self::UnsignedInt,
        Self::Uri,
        Self::Url,
        Self::Uuid,
        Self::Xhtml,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Base64Binary => "base64Binary",
            Self::Boolean => "boolean",
            Self::Canonical => "canonical",
            Self::Code => "code",
            Self::Date => "date",
            Self::DateTime => "dateTime",
            Self::Decimal => "decimal",
            Self::Id => "id",
            Self::Instant => "instant",
            Self::Integer => "integer",
            Self::Markdown => "markdown",
            Self::Oid => "oid",
            Self::PositiveInt => "positiveInt",
            Self::String => "string",
            Self::Time => "time",
            Self::UnsignedInt => "unsignedInt",
            Self::Uri => "uri",
            Self::Url => "url",
            Self::Uuid => "uuid",
            Self::Xhtml => "xhtml",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }
}

// ------------------------------------------------------------------------------ the graph

pub(crate) type NodeId = u32;

/// The element table linked for walking JSON: a node per resource, complex type and backbone
/// element, each child under the JSON names it can take.
pub(crate) struct Graph {
    pub nodes: Vec<Node>,
    /// Definition paths (`Observation.value[x]`), for messages.
    pub definitions: Vec<String>,
    roots: FxHashMap<&'static str, NodeId>,
}

pub(crate) struct Node {
    /// `Observation`, `Quantity`, `Observation.component`.
    pub name: String,
    /// A resource's root, where `resourceType` belongs.
    pub resource: bool,
    children: FxHashMap<Box<str>, Child>,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Child {
    pub ty: Ty,
    pub many: bool,
    /// The element's index in its node: one value per element (per choice, for `[x]`).
    pub slot: u8,
    /// A `_name` sibling holding a primitive's id and extensions.
    pub primitive_extension: bool,
    /// Index into `Graph::definitions`.
    pub definition: u32,
    pub choice: bool,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Ty {
    Primitive(Primitive),
    Node(NodeId),
    /// A resource of any type (`Resource`), or of one type.
    Resource(Option<NodeId>),
}

impl Graph {
    pub fn get() -> &'static Graph {
        &GRAPH
    }

    /// The node of a resource or complex type.
    pub fn root(&self, type_name: &str) -> Option<NodeId> {
        self.roots.get(type_name).copied()
    }

    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id as usize]
    }

    fn build(table: &Table) -> Self {
        let mut graph = Graph { nodes: Vec::new(), definitions: Vec::new(), roots: FxHashMap::default() };
        let mut names: Vec<&&'static str> = table.keys().collect();
        names.sort();
        for name in &names {
            let id = graph.add_node(name.to_string(), crate::fhir::ResourceType::parse(name).is_some());
            graph.roots.insert(name, id);
        }
        // The `_name` siblings of primitives: an Element (an id and extensions).
        let element = graph.add_node("Element".into(), false);
        let extension = graph.roots["Extension"];
        graph.add_child(element, "id".into(), Child::new(Ty::Primitive(Primitive::String), false, 0, 0));
        graph.add_child(element, "extension".into(), Child::new(Ty::Node(extension), true, 1, 0));
        graph.definitions.push("Element".into());

        for name in names {
            let elements = &table[*name];
            let mut paths: Vec<&&str> = elements.keys().collect();
            paths.sort();
            // Nested groups first, so each element's parent node exists.
            let mut nested: FxHashMap<&str, NodeId> = FxHashMap::default();
            nested.insert("", graph.roots[*name]);
            for path in &paths {
                if matches!(elements[**path].trim_start_matches('*'), "BackboneElement" | "Element")
                    && elements.keys().any(|p| p.len() > path.len() && p.starts_with(**path) && p.as_bytes()[path.len()] == b'.')
                {
                    let id = graph.add_node(format!("{name}.{path}"), false);
                    nested.insert(path, id);
                }
            }
            let mut slots: FxHashMap<NodeId, u8> = FxHashMap::default();
            for path in paths {
                let spec = elements[*path];
                let many = spec.starts_with('*');
                let spec = spec.trim_start_matches('*');
                let (parent_path, element) = path.rsplit_once('.').unwrap_or(("", path));
                let parent = nested[parent_path];
                let slot = slots.entry(parent).or_default();
                let this_slot = *slot;
                *slot = slot.checked_add(1).filter(|s| *s <= 128).expect("at most 128 elements per node");
                let definition = graph.definitions.len() as u32;
                graph.definitions.push(format!("{name}.{path}"));
                let resolve = |graph: &Graph, code: &str| -> Ty {
                    if let Some(p) = Primitive::parse(code) {
                        return Ty::Primitive(p);
                    }
                    match code {
                        "Resource" => Ty::Resource(None),
                        "BackboneElement" | "Element" => Ty::Node(nested.get(*path).copied().unwrap_or(graph.element())),
                        _ if crate::fhir::ResourceType::parse(code).is_some() => Ty::Resource(Some(graph.roots[code])),
                        _ => Ty::Node(*graph.roots.get(code).unwrap_or_else(|| panic!("{name}.{path}: unknown type {code}"))),
                    }
                };
                if let Some(target) = spec.strip_prefix('@') {
                    let ty = Ty::Node(nested[target]);
                    graph.add_child(parent, element.into(), Child::new(ty, many, this_slot, definition));
                } else if let Some(base) = element.strip_suffix("[x]") {
                    for code in spec.split('|') {
                        let json_name = format!("{base}{}", upper_first(code));
                        let ty = resolve(&graph, code);
                        let mut child = Child::new(ty, many, this_slot, definition);
                        child.choice = true;
                        if matches!(ty, Ty::Primitive(_)) {
                            graph.add_child(parent, format!("_{json_name}"), child.extension_of(graph.element()));
                        }
                        graph.add_child(parent, json_name, child);
                    }
                } else {
                    let ty = resolve(&graph, spec);
                    let child = Child::new(ty, many, this_slot, definition);
                    if matches!(ty, Ty::Primitive(_)) {
                        graph.add_child(parent, format!("_{element}"), child.extension_of(graph.element()));
                    }
                    graph.add_child(parent, element.into(), child);
                }
            }
        }
        graph
    }

    /// The node of `_name` siblings (Element: id and extension).
    pub(crate) fn element(&self) -> NodeId {
        self.roots.len() as NodeId
    }

    fn add_node(&mut self, name: String, resource: bool) -> NodeId {
        self.nodes.push(Node { name, resource, children: FxHashMap::default() });
        (self.nodes.len() - 1) as NodeId
    }

    fn add_child(&mut self, node: NodeId, json_name: String, child: Child) {
        self.nodes[node as usize].children.insert(json_name.into_boxed_str(), child);
    }
}

impl Node {
    /// The child a JSON property name stands for.
    pub fn child(&self, json_name: &str) -> Option<&Child> {
        self.children.get(json_name)
    }

    /// The child and the graph's own copy of its JSON name (borrowed for as long as the graph).
    pub fn child_entry(&self, json_name: &str) -> Option<(&str, &Child)> {
        self.children.get_key_value(json_name).map(|(k, c)| (&**k, c))
    }
}

impl Child {
    fn new(ty: Ty, many: bool, slot: u8, definition: u32) -> Self {
        Self { ty, many, slot, primitive_extension: false, definition, choice: false }
    }

    fn extension_of(self, element: NodeId) -> Self {
        Self { ty: Ty::Node(element), primitive_extension: true, ..self }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn types(type_name: &str, path: &str) -> Option<(Vec<&'static str>, bool)> {
        element_type(type_name, path).map(|e| (e.types, e.many))
    }

    #[test]
    fn finds_elements_by_path_through_types_choices_and_content_references() {
        assert_eq!(types("Patient", "birthDate"), Some((vec!["date"], false)));
        assert_eq!(types("Patient", "name"), Some((vec!["HumanName"], true)));
        assert_eq!(types("Patient", "name.given"), Some((vec!["string"], true)));
        assert_eq!(types("Patient", "id"), Some((vec!["id"], false)));
        assert_eq!(types("Observation", "effectiveDateTime"), Some((vec!["dateTime"], false)));
        assert_eq!(types("Observation", "effective[x]"), Some((vec!["dateTime", "Period", "Timing", "instant"], false)));
        assert_eq!(types("Observation", "component.valueQuantity.unit"), Some((vec!["string"], false)));
        assert_eq!(types("Questionnaire", "item.item.text"), Some((vec!["string"], false)));
        assert_eq!(types("Questionnaire", "item.item"), Some((vec!["BackboneElement"], true)));
        assert_eq!(types("Bundle", "entry.resource"), Some((vec!["Resource"], false)));
        assert_eq!(types("Extension", "url"), Some((vec!["uri"], false)));
        assert_eq!(element_type("Observation", "component.code").unwrap().definition, "Observation.component.code");
        assert_eq!(element_type("Patient", "name.given").unwrap().definition, "HumanName.given");
        assert_eq!(element_type("Questionnaire", "item.item").unwrap().definition, "Questionnaire.item");
        assert_eq!(types("Patient", "nope"), None);
        assert_eq!(types("Patient", "birthDate.x"), None);
        assert_eq!(types("Observation", "valueBogus"), None);
        assert_eq!(types("Nope", "id"), None);
    }

    #[test]
    fn the_graph_links_every_element() {
        let graph = Graph::get();
        let observation = graph.node(graph.root("Observation").unwrap());
        assert!(observation.resource);
        let value = observation.child("valueQuantity").unwrap();
        assert!(value.choice && !value.many);
        assert!(matches!(value.ty, Ty::Node(n) if graph.node(n).name == "Quantity"));
        assert_eq!(value.slot, observation.child("valueString").unwrap().slot);
        assert!(observation.child("_valueString").unwrap().primitive_extension);
        assert!(observation.child("_valueQuantity").is_none());
        let component = observation.child("component").unwrap();
        assert!(matches!(component.ty, Ty::Node(n) if graph.node(n).name == "Observation.component"));
        let item = graph.node(graph.root("Questionnaire").unwrap()).child("item").unwrap();
        let Ty::Node(item_node) = item.ty else { panic!() };
        assert!(matches!(graph.node(item_node).child("item").unwrap().ty, Ty::Node(n) if n == item_node));
        assert!(matches!(graph.node(graph.root("Bundle").unwrap()).child("type").unwrap().ty, Ty::Primitive(Primitive::Code)));
    }
}
