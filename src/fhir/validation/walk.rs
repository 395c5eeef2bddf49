//! The walk itself: serde visitors led by the element graph. A failure records what and where
//! in the context and unwinds as a serde error; each level adds its step to the path on the
//! way out, so a valid resource pays for no path bookkeeping.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{value::RawValue, Map, Value};

use super::{
    primitives::{self, Scalar},
    Invalid,
};
use crate::fhir::{
    element_types::{Child, Graph, Node, NodeId, Ty},
    resource::Key,
};

/// A top-level element's value: parsed, or JSON text.
pub(super) trait Input {
    fn walk(self, seed: ValueSeed) -> Result<(), serde_json::Error>;
}

impl Input for &Value {
    fn walk(self, seed: ValueSeed) -> Result<(), serde_json::Error> {
        seed.deserialize(self)
    }
}

impl Input for &RawValue {
    fn walk(self, seed: ValueSeed) -> Result<(), serde_json::Error> {
        seed.deserialize(&mut serde_json::Deserializer::from_str(self.get()))
    }
}

/// Checks the top-level elements of a resource whose root node is `root` (its resourceType
/// was checked by the caller).
pub(super) fn check_resource<'a, V: Input>(
    graph: &'static Graph,
    root: NodeId,
    allow_unknown: bool,
    fields: impl IntoIterator<Item = (&'a str, V)>,
) -> Result<(), Invalid> {
    let mut ctx = Ctx { graph, allow_unknown, problem: None };
    let node = graph.node(root);
    let mut seen = Seen::default();
    for (key, value) in fields {
        let walked = match action::<serde_json::Error>(&mut ctx, node, &mut seen, key) {
            Ok(Action::Walk(child)) => {
                value.walk(ValueSeed { ctx: &mut ctx, child, item: false }).map_err(|e| ctx.at(Step::Key(key.into()), e))
            }
            Ok(Action::ResourceType | Action::Skip) => Ok(()),
            Err(e) => Err(e),
        };
        if walked.is_err() {
            return Err(ctx.invalid(&node.name));
        }
    }
    Ok(())
}

struct Ctx {
    graph: &'static Graph,
    allow_unknown: bool,
    problem: Option<Problem>,
}

struct Problem {
    /// Innermost step first.
    path: Vec<Step>,
    message: String,
    structure: bool,
}

enum Step {
    Key(String),
    Index(usize),
}

impl Ctx {
    /// Records a failure here; the caller returns the error it gives.
    fn fail<E: de::Error>(&mut self, message: String, structure: bool) -> E {
        self.problem = Some(Problem { path: Vec::new(), message, structure });
        E::custom("invalid resource")
    }

    /// Adds a step to the path of a failure unwinding through here.
    fn at<E: de::Error>(&mut self, step: Step, e: E) -> E {
        let problem = self.problem.get_or_insert_with(|| Problem { path: Vec::new(), message: e.to_string(), structure: true });
        problem.path.push(step);
        e
    }

    fn invalid(&mut self, root: &str) -> Invalid {
        let problem = self.problem.take().unwrap_or_else(|| Problem { path: Vec::new(), message: "invalid JSON".into(), structure: true });
        let mut path = root.to_owned();
        for step in problem.path.iter().rev() {
            match step {
                Step::Key(key) => {
                    path.push('.');
                    path.push_str(key);
                }
                Step::Index(i) => path.push_str(&format!("[{i}]")),
            }
        }
        Invalid { path, message: problem.message, structure: problem.structure }
    }

    fn type_name(&self, ty: Ty) -> &'static str {
        let graph = self.graph;
        match ty {
            Ty::Primitive(p) => p.name(),
            Ty::Node(id) | Ty::Resource(Some(id)) => &graph.node(id).name,
            Ty::Resource(None) => "Resource",
        }
    }
}

/// Elements given so far in one object, by slot: one value each, one type per choice.
#[derive(Default)]
struct Seen {
    values: u128,
    extensions: u128,
}

impl Seen {
    fn insert(&mut self, child: &Child) -> bool {
        let bit = 1u128 << child.slot;
        let set = if child.primitive_extension { &mut self.extensions } else { &mut self.values };
        let new = *set & bit == 0;
        *set |= bit;
        new
    }
}

enum Action {
    Walk(Child),
    ResourceType,
    Skip,
}

/// What to do with the property `key` of an object of `node`.
fn action<E: de::Error>(ctx: &mut Ctx, node: &Node, seen: &mut Seen, key: &str) -> Result<Action, E> {
    let failure = match node.child(key) {
        Some(child) if seen.insert(child) => return Ok(Action::Walk(*child)),
        Some(child) if child.choice => format!("{} takes one value of one type", ctx.graph.definitions[child.definition as usize]),
        Some(_) => "is given twice".to_owned(),
        None if key == "resourceType" && node.resource => return Ok(Action::ResourceType),
        None if ctx.allow_unknown => return Ok(Action::Skip),
        None => format!("unknown element (not in the R4 definition of {})", node.name),
    };
    let e = ctx.fail(failure, true);
    Err(ctx.at(Step::Key(key.to_owned()), e))
}

/// One element's value (or one item of a repeating element's array).
pub(super) struct ValueSeed<'c> {
    ctx: &'c mut Ctx,
    child: Child,
    /// Inside the element's array.
    item: bool,
}

impl ValueSeed<'_> {
    /// A single JSON value where the definition wants one.
    fn single<E: de::Error>(&mut self) -> Result<(), E> {
        if self.child.many && !self.item {
            let name = self.ctx.type_name(self.child.ty);
            return Err(self.ctx.fail(format!("must be an array ({name}, max *)"), true));
        }
        Ok(())
    }

    fn scalar<E: de::Error>(mut self, value: Scalar) -> Result<(), E> {
        self.single()?;
        match self.child.ty {
            Ty::Primitive(p) => primitives::check(p, value).map_err(|e| self.ctx.fail(e.to_string(), false)),
            ty => {
                let name = self.ctx.type_name(ty);
                Err(self.ctx.fail(format!("{name} must be a JSON object, found {}", primitives::describe(value)), true))
            }
        }
    }
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a FHIR element")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.scalar(Scalar::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.scalar(Scalar::Int(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.scalar(Scalar::Int(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.scalar(Scalar::Float(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.scalar(Scalar::Str(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        // Nulls keep a primitive array and its `_name` sibling in step (R4 JSON, "Primitive
        // Types"); anywhere else an element is left out, never null.
        if self.item && (self.child.primitive_extension || matches!(self.child.ty, Ty::Primitive(_))) {
            return Ok(());
        }
        Err(self.ctx.fail("null is not a value".into(), true))
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.visit_unit()
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if self.item {
            return Err(self.ctx.fail("an array inside an array".into(), true));
        }
        if !self.child.many {
            let name = self.ctx.type_name(self.child.ty);
            return Err(self.ctx.fail(format!("must be a single value, not an array ({name}, max 1)"), true));
        }
        let mut i = 0;
        while seq
            .next_element_seed(ValueSeed { ctx: &mut *self.ctx, child: self.child, item: true })
            .map_err(|e| self.ctx.at(Step::Index(i), e))?
            .is_some()
        {
            i += 1;
        }
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(mut self, map: A) -> Result<(), A::Error> {
        self.single()?;
        match self.child.ty {
            Ty::Node(id) => walk_object(self.ctx, id, map),
            Ty::Resource(expected) => walk_resource(self.ctx, expected, map),
            Ty::Primitive(p) => {
                Err(self.ctx.fail(format!("{} must be {}, found an object", p.name(), primitives::json_kind(p)), true))
            }
        }
    }
}

fn walk_object<'de, A: MapAccess<'de>>(ctx: &mut Ctx, id: NodeId, mut map: A) -> Result<(), A::Error> {
    let graph = ctx.graph;
    let node = graph.node(id);
    let mut seen = Seen::default();
    while let Some(Key(key)) = map.next_key()? {
        match action(ctx, node, &mut seen, &key)? {
            Action::Walk(child) => {
                map.next_value_seed(ValueSeed { ctx: &mut *ctx, child, item: false }).map_err(|e| ctx.at(Step::Key(key.into_owned()), e))?
            }
            Action::ResourceType => {
                let Key(name) = map.next_value().map_err(|e| ctx.at(Step::Key("resourceType".into()), e))?;
                if name != node.name {
                    let e = ctx.fail(format!("'{name}' in a {} resource", node.name), true);
                    return Err(ctx.at(Step::Key("resourceType".into()), e));
                }
            }
            Action::Skip => {
                map.next_value::<IgnoredAny>()?;
            }
        }
    }
    Ok(())
}

/// A nested resource (contained, Bundle.entry.resource, Parameters.parameter.resource): its
/// resourceType says which definition applies.
fn walk_resource<'de, A: MapAccess<'de>>(ctx: &mut Ctx, expected: Option<NodeId>, mut map: A) -> Result<(), A::Error> {
    let Some(Key(first)) = map.next_key()? else {
        return Err(ctx.fail("a resource needs a resourceType".into(), true));
    };
    if first == "resourceType" {
        let Key(name) = map.next_value().map_err(|e| ctx.at(Step::Key("resourceType".into()), e))?;
        let id = resource_node(ctx, expected, &name)?;
        return walk_object(ctx, id, map);
    }
    // resourceType comes later (JSON has no order; FHIR only recommends it first): hold the
    // object, then walk it.
    let mut object = Map::new();
    object.insert(first.into_owned(), map.next_value()?);
    while let Some((key, value)) = map.next_entry::<String, Value>()? {
        object.insert(key, value);
    }
    let Some(Value::String(name)) = object.get("resourceType") else {
        return Err(ctx.fail("a resource needs a resourceType".into(), true));
    };
    let id = resource_node(ctx, expected, name)?;
    Value::Object(object).deserialize_map(ObjectVisitor { ctx, id }).map_err(de::Error::custom)
}

fn resource_node<E: de::Error>(ctx: &mut Ctx, expected: Option<NodeId>, name: &str) -> Result<NodeId, E> {
    let failure = match ctx.graph.root(name) {
        Some(id) if ctx.graph.node(id).resource && expected.is_none_or(|e| e == id) => return Ok(id),
        Some(id) if ctx.graph.node(id).resource => format!("'{name}' where a {} belongs", ctx.type_name(Ty::Resource(expected))),
        _ => format!("'{name}' is not an R4 resource type"),
    };
    let e = ctx.fail(failure, true);
    Err(ctx.at(Step::Key("resourceType".into()), e))
}

struct ObjectVisitor<'c> {
    ctx: &'c mut Ctx,
    id: NodeId,
}

impl<'de> Visitor<'de> for ObjectVisitor<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        walk_object(self.ctx, self.id, map)
    }
}

