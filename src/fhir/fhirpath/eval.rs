//! Evaluation of an `Expr` over any document that implements `Tree`: collections in, collections
//! out, FHIRPath's empty-propagation and three-valued logic. Total: odd data gives empty results.

use std::cmp::Ordering;

use serde_json::{Number, Value};

use super::{Arith, Cmp, Expr, Function};

/// A document the evaluator can walk. Items are cheap handles (a node of the document or a
/// literal value); the tree answers what each one holds.
pub trait Tree {
    type Item: Clone;
    /// A value computed by the expression (a literal, a count, a boolean...).
    fn literal(&self, value: Value, ty: &'static str) -> Self::Item;
    /// The item's JSON value: a primitive's value; for complex nodes, whatever the tree keeps.
    fn value<'s>(&'s self, item: &'s Self::Item) -> Option<&'s Value>;
    /// The item's FHIR type, where known.
    fn type_name<'s>(&'s self, item: &'s Self::Item) -> Option<&'s str>;
    /// The element name the item was reached by (`value` for `valueQuantity`), where known.
    fn name<'s>(&'s self, item: &'s Self::Item) -> Option<&'s str>;
    /// The children named `name` (a choice element by its base name), arrays flattened.
    fn members(&self, item: &Self::Item, name: &str, out: &mut Vec<Self::Item>);
    /// All children, in document order.
    fn children(&self, item: &Self::Item, out: &mut Vec<Self::Item>);
    /// Whether the item is a resource (contained or bundled resources stop `nodesByType`).
    fn is_resource(&self, item: &Self::Item) -> bool;
    /// Whether two items are the same node (complex nodes compare by identity).
    fn same(&self, a: &Self::Item, b: &Self::Item) -> bool;
    /// `resolve()`: what the tree can know of the resource a Reference names.
    fn resolve(&self, item: &Self::Item) -> Option<Self::Item>;
}

/// What an evaluation runs on: the tree, its resource (`%resource`) and that resource's type
/// (a leading `Patient.` selects it).
pub struct Env<'t, T: Tree> {
    pub tree: &'t T,
    pub resource: T::Item,
    pub resource_type: &'t str,
    /// Where a strict caller learns that operands did not fit (a string compared with a number),
    /// which FHIRPath engines report as an error; the result is empty either way.
    pub mismatch: Option<&'t std::cell::Cell<bool>>,
}

impl<T: Tree> Env<'_, T> {
    fn mismatched(&self) {
        if let Some(flag) = self.mismatch {
            flag.set(true);
        }
    }
}

/// Evaluates `expr` with `context` as its input collection.
pub fn eval_on<T: Tree>(expr: &Expr, env: &Env<T>, context: &[T::Item]) -> Vec<T::Item> {
    eval(expr, env, context, true)
}

fn eval<T: Tree>(expr: &Expr, env: &Env<T>, context: &[T::Item], at_root: bool) -> Vec<T::Item> {
    let tree = env.tree;
    match expr {
        Expr::This => context.to_vec(),
        Expr::Resource => vec![env.resource.clone()],
        Expr::Name(name) => {
            // A leading type name selects the resource when it is of that type (the branch of a
            // search parameter shared by several types that applies to this one), else nothing.
            if at_root && (name == env.resource_type || name == "Resource" || name == "DomainResource") {
                context.to_vec()
            } else if at_root && name.starts_with(|c: char| c.is_ascii_uppercase()) {
                // Element names start in lower case, type names in upper case.
                Vec::new()
            } else {
                members(tree, context, name)
            }
        }
        Expr::Member(target, name) => members(tree, &eval(target, env, context, at_root), name),
        Expr::Index(target, index) => eval(target, env, context, at_root).into_iter().nth(*index).into_iter().collect(),
        Expr::Call(target, function) => {
            let input = eval(target, env, context, at_root);
            call(function, input, env, context)
        }
        Expr::Str(s) => vec![tree.literal(Value::String(s.clone()), "string")],
        Expr::Bool(b) => vec![boolean(tree, *b)],
        Expr::Int(n) => vec![tree.literal(Value::from(*n), "integer")],
        Expr::Num(n) => vec![tree.literal(Number::from_f64(*n).map_or(Value::Null, Value::Number), "decimal")],
        Expr::Date(text, ty) => vec![tree.literal(Value::String(text.clone()), ty)],
        Expr::Union(a, b) => {
            let mut out = Vec::new();
            for item in eval(a, env, context, at_root).into_iter().chain(eval(b, env, context, at_root)) {
                if !out.iter().any(|o| equal(tree, o, &item)) {
                    out.push(item);
                }
            }
            out
        }
        Expr::Equals(a, b, negate) => {
            let (a, b) = (eval(a, env, context, at_root), eval(b, env, context, at_root));
            if a.is_empty() || b.is_empty() {
                return Vec::new();
            }
            let same = a.len() == b.len() && a.iter().zip(&b).all(|(x, y)| equal(tree, x, y));
            vec![boolean(tree, same != *negate)]
        }
        Expr::Compare(a, op, b) => {
            let (a, b) = (eval(a, env, context, at_root), eval(b, env, context, at_root));
            let ([a], [b]) = (a.as_slice(), b.as_slice()) else { return Vec::new() };
            let order = match compare(tree, a, b) {
                Some(Some(order)) => order,
                Some(None) => return Vec::new(),
                None => {
                    env.mismatched();
                    return Vec::new();
                }
            };
            let result = match op {
                Cmp::Lt => order == Ordering::Less,
                Cmp::Le => order != Ordering::Greater,
                Cmp::Gt => order == Ordering::Greater,
                Cmp::Ge => order != Ordering::Less,
            };
            vec![boolean(tree, result)]
        }
        Expr::In(element, collection) => {
            let element = eval(element, env, context, at_root);
            let [element] = element.as_slice() else { return Vec::new() };
            let found = eval(collection, env, context, at_root).iter().any(|c| equal(tree, element, c));
            vec![boolean(tree, found)]
        }
        Expr::Arith(a, op, b) => {
            let (a, b) = (eval(a, env, context, at_root), eval(b, env, context, at_root));
            let result = arith(tree, &a, *op, &b);
            if result.is_none() && !a.is_empty() && !b.is_empty() {
                env.mismatched();
            }
            result.into_iter().collect()
        }
        Expr::Negate(target) => {
            let items = eval(target, env, context, at_root);
            let [item] = items.as_slice() else { return Vec::new() };
            match tree.value(item) {
                Some(Value::Number(n)) if n.is_i64() => n.as_i64().and_then(i64::checked_neg).map(|n| tree.literal(n.into(), "integer")).into_iter().collect(),
                Some(Value::Number(n)) => n.as_f64().and_then(|f| Number::from_f64(-f)).map(|n| tree.literal(Value::Number(n), "decimal")).into_iter().collect(),
                _ => Vec::new(),
            }
        }
        Expr::And(a, b) => {
            let (a, b) = (logic(tree, &eval(a, env, context, at_root)), logic(tree, &eval(b, env, context, at_root)));
            match (a, b) {
                (Some(false), _) | (_, Some(false)) => vec![boolean(tree, false)],
                (Some(true), Some(true)) => vec![boolean(tree, true)],
                _ => Vec::new(),
            }
        }
        Expr::Or(a, b) => {
            let (a, b) = (logic(tree, &eval(a, env, context, at_root)), logic(tree, &eval(b, env, context, at_root)));
            match (a, b) {
                (Some(true), _) | (_, Some(true)) => vec![boolean(tree, true)],
                (Some(false), Some(false)) => vec![boolean(tree, false)],
                _ => Vec::new(),
            }
        }
        Expr::Xor(a, b) => {
            let (a, b) = (logic(tree, &eval(a, env, context, at_root)), logic(tree, &eval(b, env, context, at_root)));
            match (a, b) {
                (Some(a), Some(b)) => vec![boolean(tree, a != b)],
                _ => Vec::new(),
            }
        }
        Expr::Implies(a, b) => {
            let (a, b) = (logic(tree, &eval(a, env, context, at_root)), logic(tree, &eval(b, env, context, at_root)));
            match (a, b) {
                (Some(false), _) | (_, Some(true)) => vec![boolean(tree, true)],
                (Some(true), Some(false)) => vec![boolean(tree, false)],
                _ => Vec::new(),
            }
        }
        Expr::Is(target, ty) => {
            let items = eval(target, env, context, at_root);
            match items.as_slice() {
                [item] => vec![boolean(tree, is_type(tree, item, ty))],
                _ => Vec::new(),
            }
        }
        Expr::As(target, ty) => eval(target, env, context, at_root).into_iter().filter(|i| is_type(tree, i, ty)).collect(),
    }
}

fn boolean<T: Tree>(tree: &T, b: bool) -> T::Item {
    tree.literal(Value::Bool(b), "boolean")
}

/// Whether an item is of FHIR type `name` (`dateTime` and the suffix `DateTime` agree).
fn is_type<T: Tree>(tree: &T, item: &T::Item, name: &str) -> bool {
    tree.type_name(item).is_some_and(|t| t.eq_ignore_ascii_case(name))
}

/// FHIRPath's boolean reading of a collection where one is expected, as `where` uses it: a single
/// `true`. An empty collection is "unknown", which is not true.
fn truthy<T: Tree>(tree: &T, items: &[T::Item]) -> bool {
    matches!(items, [item] if tree.value(item) == Some(&Value::Bool(true)))
}

/// The three-valued reading `and`, `or`, ... use: empty is unknown, a single boolean is itself,
/// any other single item is true.
fn logic<T: Tree>(tree: &T, items: &[T::Item]) -> Option<bool> {
    match items {
        [item] => Some(tree.value(item).and_then(Value::as_bool).unwrap_or(true)),
        _ => None,
    }
}

fn members<T: Tree>(tree: &T, items: &[T::Item], name: &str) -> Vec<T::Item> {
    let mut out = Vec::new();
    for item in items {
        tree.members(item, name, &mut out);
    }
    out
}

fn equal<T: Tree>(tree: &T, a: &T::Item, b: &T::Item) -> bool {
    match (tree.value(a), tree.value(b)) {
        (Some(Value::Number(x)), Some(Value::Number(y))) => x == y || x.as_f64() == y.as_f64(),
        // Date-times in different zones are equal when they name the same instant.
        (Some(Value::String(x)), Some(Value::String(y))) if x != y && is_temporal(tree.type_name(a)) && is_temporal(tree.type_name(b)) => {
            compare_dates(x, y) == Some(Ordering::Equal)
        }
        (Some(x), Some(y)) => x == y,
        (None, None) => tree.same(a, b),
        _ => false,
    }
}

fn is_temporal(ty: Option<&str>) -> bool {
    matches!(ty, Some("date" | "dateTime" | "instant" | "time"))
}

/// The order of two values; None when they cannot be compared (a string and a number), Some(None)
/// when the answer is unknown (dates equal over the precision both have, but of different ones).
fn compare<T: Tree>(tree: &T, a: &T::Item, b: &T::Item) -> Option<Option<Ordering>> {
    match (tree.value(a)?, tree.value(b)?) {
        (Value::Number(x), Value::Number(y)) => Some(x.as_f64().zip(y.as_f64()).and_then(|(x, y)| x.partial_cmp(&y))),
        (Value::String(x), Value::String(y)) if is_temporal(tree.type_name(a)) || is_temporal(tree.type_name(b)) => {
            // A date against a value known to be a plain string is a type error.
            let plain = |t: Option<&str>| t.is_some_and(|t| !is_temporal(Some(t)));
            if plain(tree.type_name(a)) || plain(tree.type_name(b)) {
                return None;
            }
            Some(compare_dates(x, y))
        }
        (Value::String(x), Value::String(y)) => Some(Some(x.cmp(y))),
        _ => None,
    }
}

/// Dates and times of ISO 8601 form compare as text over the precision both have; equal there
/// but of different precision is unknown.
fn compare_dates(a: &str, b: &str) -> Option<Ordering> {
    // Both to the second with a zone: compare the instants.
    if let (Ok(x), Ok(y)) = (chrono::DateTime::parse_from_rfc3339(a), chrono::DateTime::parse_from_rfc3339(b)) {
        return Some(x.cmp(&y));
    }
    let common = a.len().min(b.len());
    let (x, y) = (a.get(..common)?, b.get(..common)?);
    match x.cmp(y) {
        Ordering::Equal if a.len() != b.len() => None,
        order => Some(order),
    }
}

fn arith<T: Tree>(tree: &T, a: &[T::Item], op: Arith, b: &[T::Item]) -> Option<T::Item> {
    if op == Arith::Concat {
        let text = |items: &[T::Item]| match items {
            [] => Some(String::new()),
            [item] => tree.value(item).and_then(Value::as_str).map(str::to_owned),
            _ => None,
        };
        return Some(tree.literal(Value::String(text(a)? + &text(b)?), "string"));
    }
    let ([a], [b]) = (a, b) else { return None };
    match (tree.value(a)?, tree.value(b)?) {
        (Value::String(x), Value::String(y)) if op == Arith::Add => Some(tree.literal(Value::String(format!("{x}{y}")), "string")),
        (Value::Number(x), Value::Number(y)) => {
            if let (Some(x), Some(y)) = (x.as_i64(), y.as_i64())
                && op != Arith::Div
            {
                let n = match op {
                    Arith::Add => x.checked_add(y),
                    Arith::Sub => x.checked_sub(y),
                    Arith::Mul => x.checked_mul(y),
                    Arith::IntDiv => x.checked_div(y),
                    _ => x.checked_rem(y),
                }?;
                return Some(tree.literal(n.into(), "integer"));
            }
            let (x, y) = (x.as_f64()?, y.as_f64()?);
            let n = match op {
                Arith::Add => x + y,
                Arith::Sub => x - y,
                Arith::Mul => x * y,
                _ if y == 0.0 => return None,
                Arith::IntDiv => (x / y).trunc(),
                Arith::Mod => x % y,
                _ => x / y,
            };
            Number::from_f64(n).map(|n| tree.literal(Value::Number(n), "decimal"))
        }
        _ => None,
    }
}

/// The single string an argument evaluates to.
fn string_arg<T: Tree>(arg: &Expr, env: &Env<T>, context: &[T::Item]) -> Option<String> {
    let items = eval(arg, env, context, false);
    match items.as_slice() {
        [item] => env.tree.value(item).and_then(Value::as_str).map(str::to_owned),
        _ => None,
    }
}

fn int_arg<T: Tree>(arg: &Expr, env: &Env<T>, context: &[T::Item]) -> Option<i64> {
    let items = eval(arg, env, context, false);
    match items.as_slice() {
        [item] => env.tree.value(item).and_then(Value::as_i64),
        _ => None,
    }
}

/// Self and descendants, not entering nested resources (the anonymization engine's
/// `SelfAndDescendantsWithoutSubResource`).
fn self_and_descendants<T: Tree>(tree: &T, item: &T::Item, out: &mut Vec<T::Item>) {
    out.push(item.clone());
    let mut children = Vec::new();
    tree.children(item, &mut children);
    for child in children.iter().filter(|c| !tree.is_resource(c)) {
        self_and_descendants(tree, child, out);
    }
}

fn descendants<T: Tree>(tree: &T, item: &T::Item, out: &mut Vec<T::Item>) {
    let mut children = Vec::new();
    tree.children(item, &mut children);
    for child in children {
        out.push(child.clone());
        descendants(tree, &child, out);
    }
}

fn call<T: Tree>(function: &Function, input: Vec<T::Item>, env: &Env<T>, context: &[T::Item]) -> Vec<T::Item> {
    let tree = env.tree;
    let one = |items: &[T::Item]| -> Option<String> {
        match items {
            [item] => tree.value(item).and_then(Value::as_str).map(str::to_owned),
            _ => None,
        }
    };
    let string = |s: String| vec![tree.literal(Value::String(s), "string")];
    let flag = |b: bool| vec![boolean(tree, b)];
    match function {
        Function::Where(criteria) => input.into_iter().filter(|item| truthy(tree, &eval(criteria, env, std::slice::from_ref(item), false))).collect(),
        Function::Select(projection) => input.iter().flat_map(|item| eval(projection, env, std::slice::from_ref(item), false)).collect(),
        Function::All(criteria) => flag(input.iter().all(|item| truthy(tree, &eval(criteria, env, std::slice::from_ref(item), false)))),
        Function::OfType(ty) => input.into_iter().filter(|i| is_type(tree, i, ty)).collect(),
        Function::IsType(ty) => match input.as_slice() {
            [item] => flag(is_type(tree, item, ty)),
            _ => Vec::new(),
        },
        Function::Exists(None) => flag(!input.is_empty()),
        Function::Exists(Some(criteria)) => flag(input.iter().any(|item| truthy(tree, &eval(criteria, env, std::slice::from_ref(item), false)))),
        Function::Empty => flag(input.is_empty()),
        Function::HasValue => flag(matches!(input.as_slice(), [item] if matches!(tree.value(item), Some(Value::String(_) | Value::Number(_) | Value::Bool(_))))),
        Function::First => input.into_iter().take(1).collect(),
        Function::Last => input.into_iter().last().into_iter().collect(),
        Function::Tail => input.into_iter().skip(1).collect(),
        Function::Single => if input.len() == 1 { input } else { Vec::new() },
        Function::Count => vec![tree.literal(Value::from(input.len()), "integer")],
        Function::Distinct => {
            let mut out: Vec<T::Item> = Vec::new();
            for item in input {
                if !out.iter().any(|o| equal(tree, o, &item)) {
                    out.push(item);
                }
            }
            out
        }
        Function::Not => match input.as_slice() {
            [item] => match tree.value(item) {
                Some(Value::Bool(b)) => flag(!b),
                _ => Vec::new(),
            },
            _ => Vec::new(),
        },
        Function::Resolve => input.iter().filter_map(|item| tree.resolve(item)).collect(),
        Function::NodesByType(ty) => {
            let mut all = Vec::new();
            for item in &input {
                self_and_descendants(tree, item, &mut all);
            }
            all.into_iter().filter(|i| tree.type_name(i) == Some(ty.as_str())).collect()
        }
        Function::NodesByName(name) => {
            let mut all = Vec::new();
            for item in &input {
                self_and_descendants(tree, item, &mut all);
            }
            all.into_iter().filter(|i| tree.name(i) == Some(name.as_str())).collect()
        }
        Function::Children => {
            let mut out = Vec::new();
            for item in &input {
                tree.children(item, &mut out);
            }
            out
        }
        Function::Descendants => {
            let mut out = Vec::new();
            for item in &input {
                descendants(tree, item, &mut out);
            }
            out
        }
        Function::Extension(url) => {
            let Some(url) = string_arg(url, env, context) else { return Vec::new() };
            members(tree, &input, "extension")
                .into_iter()
                .filter(|e| members(tree, std::slice::from_ref(e), "url").iter().any(|u| tree.value(u).and_then(Value::as_str) == Some(url.as_str())))
                .collect()
        }
        Function::StartsWith(arg) | Function::EndsWith(arg) | Function::Contains(arg) | Function::Matches(arg) | Function::IndexOf(arg) => {
            let (Some(s), Some(arg)) = (one(&input), string_arg(arg, env, context)) else { return Vec::new() };
            match function {
                Function::StartsWith(_) => flag(s.starts_with(&arg)),
                Function::EndsWith(_) => flag(s.ends_with(&arg)),
                Function::Contains(_) => flag(s.contains(&arg)),
                Function::IndexOf(_) => {
                    let at = s.find(&arg).map_or(-1, |byte| s[..byte].chars().count() as i64);
                    vec![tree.literal(at.into(), "integer")]
                }
                _ => match regex::RegexBuilder::new(&arg).size_limit(1 << 20).build() {
                    Ok(re) => flag(re.is_match(&s)),
                    Err(_) => Vec::new(),
                },
            }
        }
        Function::Replace(pattern, substitution) | Function::ReplaceMatches(pattern, substitution) => {
            let (Some(s), Some(pattern), Some(substitution)) = (one(&input), string_arg(pattern, env, context), string_arg(substitution, env, context)) else {
                return Vec::new();
            };
            if matches!(function, Function::Replace(..)) {
                return string(s.replace(&pattern, &substitution));
            }
            match regex::RegexBuilder::new(&pattern).size_limit(1 << 20).build() {
                Ok(re) => string(re.replace_all(&s, substitution.as_str()).into_owned()),
                Err(_) => Vec::new(),
            }
        }
        Function::Substring(start, length) => {
            let (Some(s), Some(start)) = (one(&input), int_arg(start, env, context)) else { return Vec::new() };
            let count = s.chars().count() as i64;
            if start < 0 || start >= count {
                return Vec::new();
            }
            let length = match length {
                Some(length) => match int_arg(length, env, context) {
                    Some(n) => n.max(0),
                    None => return Vec::new(),
                },
                None => count,
            };
            string(s.chars().skip(start as usize).take(length.min(count) as usize).collect())
        }
        Function::Length => one(&input).map(|s| vec![tree.literal(Value::from(s.chars().count()), "integer")]).unwrap_or_default(),
        Function::Upper => one(&input).map(|s| string(s.to_uppercase())).unwrap_or_default(),
        Function::Lower => one(&input).map(|s| string(s.to_lowercase())).unwrap_or_default(),
        Function::Trim => one(&input).map(|s| string(s.trim().to_owned())).unwrap_or_default(),
        Function::ToString => match input.as_slice() {
            [item] => match tree.value(item) {
                Some(Value::String(s)) => string(s.clone()),
                Some(v @ (Value::Number(_) | Value::Bool(_))) => string(v.to_string()),
                _ => Vec::new(),
            },
            _ => Vec::new(),
        },
        Function::Iif(condition, then, otherwise) => {
            if truthy(tree, &eval(condition, env, &input, false)) {
                eval(then, env, context, false)
            } else {
                otherwise.as_ref().map(|e| eval(e, env, context, false)).unwrap_or_default()
            }
        }
    }
}
