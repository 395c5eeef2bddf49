//! Builds a document straight from JSON, typing each property with the R4 element graph as it
//! is read: no intermediate `Value` maps (they cost more than the rules). The same code reads a
//! parsed `Value` (a `Value` is a serde `Deserializer` too), for the cases that need the whole
//! object first: a resource whose `resourceType` is not its first property, a primitive's
//! `_name` sibling, a substitute's replacement.

use std::{borrow::Cow, fmt};

use serde::{
    Deserialize,
    de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor, value::MapAccessDeserializer, value::SeqAccessDeserializer},
};
use serde_json::{Map, Value};

use super::{Document, Node, NodeId, choice_base_len, type_name};
use crate::fhir::element_types::{Graph, Ty};

/// Why a line is not a resource the engine can read.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("not JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("not JSON: {0}")]
    NotUtf8(String),
    #[error("not an R4 resource (resourceType '{0}' is unknown or missing)")]
    NotAResource(String),
}

impl Document {
    /// Reads one resource's JSON text.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, BuildError> {
        let mut doc = Document::new();
        // Checked as UTF-8 once, rather than string by string as a byte slice is read.
        let text = std::str::from_utf8(bytes).map_err(|e| BuildError::NotUtf8(e.to_string()))?;
        let mut de = serde_json::Deserializer::from_str(text);
        let root = Resource { doc: &mut doc, place: None }.deserialize(&mut de)?;
        de.end()?;
        match root {
            Built::Node => Ok(doc),
            Built::Other(value) => Err(BuildError::NotAResource(match value.get("resourceType") {
                Some(Value::String(t)) => t.clone(),
                Some(other) => other.to_string(),
                None => String::new(),
            })),
        }
    }

    /// Adds the properties of a JSON object as children of `parent` (a complex or resource
    /// node).
    pub(super) fn fill(&mut self, parent: NodeId, map: Map<String, Value>) {
        // A `Value` always reads: there is no error to report.
        let _ = Value::Object(map).deserialize_map(Properties { doc: self, parent });
    }

    /// Gives the primitives named `key` under `parent` the id and extensions of `_key`.
    fn attach_extensions(&mut self, parent: NodeId, key: &str, value: Value) {
        let graph = Graph::get();
        let targets: Vec<NodeId> = self.nodes[parent as usize].children.iter().copied().filter(|&c| &*self.nodes[c as usize].key == key).collect();
        let element = Some(graph.element());
        let items = match value {
            Value::Array(items) => items,
            other => vec![other],
        };
        for (i, item) in items.into_iter().enumerate() {
            let Value::Object(map) = item else { continue };
            let target = match targets.get(i) {
                Some(&t) => t,
                None => {
                    // An extension without a value: the primitive exists for it.
                    let Some(p) = graph.node(self.nodes[parent as usize].graph.unwrap_or_default()).child(key) else {
                        continue;
                    };
                    let Ty::Primitive(prim) = p.ty else { continue };
                    let name_len = if p.choice { choice_base_len(key, p.ty, graph) } else { key.len() };
                    self.push(Node::primitive(Cow::Owned(key.to_owned()), name_len, prim, p.many, None, parent))
                }
            };
            self.nodes[target as usize].graph = element;
            self.fill(target, map);
        }
    }
}

/// What reading a resource gave: its node, or (not a resource R4 knows) the JSON as it was.
enum Built {
    Node,
    Other(Value),
}

/// Where a resource goes: the root, or a property (`contained`, `entry.resource`) of a node.
#[derive(Clone, Copy)]
struct Place {
    parent: NodeId,
    key: &'static str,
    name_len: usize,
    many: bool,
}

/// A JSON object that should be a resource: typed by its `resourceType`.
struct Resource<'d> {
    doc: &'d mut Document,
    place: Option<Place>,
}

impl<'de> DeserializeSeed<'de> for Resource<'_> {
    type Value = Built;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Built, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Resource<'_> {
    type Value = Built;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a resource")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Built, A::Error> {
        let graph = Graph::get();
        let first = map.next_key_seed(Key)?;
        if first.as_deref() == Some("resourceType") {
            let ty: Value = map.next_value()?;
            if let Some(root) = ty.as_str().and_then(|t| graph.root(t)) {
                let id = self.doc.start_resource(root, self.place);
                fill_from(self.doc, id, map)?;
                return Ok(Built::Node);
            }
            let mut object = Map::new();
            object.insert("resourceType".into(), ty);
            return Ok(Built::Other(rest_of(object, map)?));
        }
        // `resourceType` later on (or missing): the whole object first.
        let mut object = Map::new();
        if let Some(key) = first {
            object.insert(key.into_owned(), map.next_value()?);
        }
        let Value::Object(object) = rest_of(object, map)? else { unreachable!("rest_of gives an object") };
        let Some(root) = object.get("resourceType").and_then(Value::as_str).and_then(|t| graph.root(t)) else {
            return Ok(Built::Other(Value::Object(object)));
        };
        let id = self.doc.start_resource(root, self.place);
        self.doc.fill(id, object);
        Ok(Built::Node)
    }
}

/// The rest of an object being read, after what `object` already holds.
fn rest_of<'de, A: MapAccess<'de>>(mut object: Map<String, Value>, mut map: A) -> Result<Value, A::Error> {
    while let Some(key) = map.next_key::<String>()? {
        let value = map.next_value()?;
        object.insert(key, value);
    }
    Ok(Value::Object(object))
}

/// The properties of an object, as children of `parent`.
struct Properties<'d> {
    doc: &'d mut Document,
    parent: NodeId,
}

impl<'de> Visitor<'de> for Properties<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        fill_from(self.doc, self.parent, map)
    }
}

/// Reads the (remaining) properties of an object into children of `parent`.
fn fill_from<'de, A: MapAccess<'de>>(doc: &mut Document, parent: NodeId, mut map: A) -> Result<(), A::Error> {
    let graph = Graph::get();
    let gnode = doc.nodes[parent as usize].graph.map(|g| graph.node(g));
    let resource = doc.nodes[parent as usize].resource;
    let mut extensions = Vec::new();
    while let Some(key) = map.next_key_seed(Key)? {
        if resource && key == "resourceType" {
            map.next_value::<IgnoredAny>()?;
            continue;
        }
        match gnode.and_then(|g| g.child_entry(&key)) {
            Some((_, c)) if c.primitive_extension => extensions.push((key.into_owned(), map.next_value::<Value>()?)),
            Some((static_key, c)) => {
                let name_len = if c.choice { choice_base_len(&key, c.ty, graph) } else { key.len() };
                let slot = Slot { doc: &mut *doc, parent, key: static_key, name_len, ty: c.ty, many: c.many, top: true };
                map.next_value_seed(slot)?;
            }
            None => {
                let value: Value = map.next_value()?;
                let len = key.len().min(255);
                doc.push(Node::opaque(Cow::Owned(key.into_owned()), len, false, value, parent));
            }
        }
    }
    for (key, value) in extensions {
        doc.attach_extensions(parent, &key[1..], value);
    }
    Ok(())
}

/// A property's value (`top`: an array stands for its items), or one item of its array.
struct Slot<'d> {
    doc: &'d mut Document,
    parent: NodeId,
    key: &'static str,
    name_len: usize,
    ty: Ty,
    many: bool,
    top: bool,
}

impl Slot<'_> {
    /// A value that is not an object (or, for a primitive, any value).
    fn scalar<E>(self, value: Value) -> Result<(), E> {
        let Slot { doc, parent, key, name_len, ty, many, .. } = self;
        match ty {
            Ty::Primitive(p) => {
                let value = (!value.is_null()).then_some(value);
                doc.push(Node::primitive(Cow::Borrowed(key), name_len, p, many, value, parent));
            }
            // A null complex value is nothing; any other non-object is kept as it was.
            _ if value.is_null() => {}
            _ => {
                doc.push(Node::opaque(Cow::Borrowed(key), name_len, many, value, parent));
            }
        }
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for Slot<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Slot<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.scalar(Value::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.scalar(Value::from(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.scalar(Value::from(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.scalar(Value::from(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.scalar(Value::String(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<(), E> {
        self.scalar(Value::String(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.scalar(Value::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.scalar(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if !self.top {
            let value = Value::deserialize(SeqAccessDeserializer::new(seq))?;
            return self.scalar(value);
        }
        let Slot { doc, parent, key, name_len, ty, .. } = self;
        while seq.next_element_seed(Slot { doc: &mut *doc, parent, key, name_len, ty, many: true, top: false })?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        let graph = Graph::get();
        match self.ty {
            Ty::Node(g) => {
                let Slot { doc, parent, key, name_len, many, .. } = self;
                let id = doc.push(Node::complex(Cow::Borrowed(key), name_len, type_name(graph, g), Some(g), false, many, parent));
                fill_from(doc, id, map)
            }
            Ty::Resource(_) => {
                let place = Place { parent: self.parent, key: self.key, name_len: self.name_len, many: self.many };
                let Slot { doc, .. } = self;
                if let Built::Other(value) = (Resource { doc: &mut *doc, place: Some(place) }).visit_map(map)? {
                    doc.push(Node::opaque(Cow::Borrowed(place.key), place.name_len, place.many, value, place.parent));
                }
                Ok(())
            }
            Ty::Primitive(_) => {
                let value = Value::deserialize(MapAccessDeserializer::new(map))?;
                self.scalar(value)
            }
        }
    }
}

/// An object key or a short string, borrowed from the input where it has no escapes.
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Cow<'de, str>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Cow<'de, str>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Borrowed(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(v))
    }
}

impl Document {
    /// Adds a resource node of graph node `root`: the document's root, or a property's value.
    fn start_resource(&mut self, root: u32, place: Option<Place>) -> NodeId {
        let graph = Graph::get();
        let ty = type_name(graph, root);
        let (key, name_len, many, parent) = match place {
            Some(p) => {
                self.nested = true;
                (p.key, p.name_len, p.many, Some(p.parent))
            }
            None => (ty, 0, false, None),
        };
        let mut node = Node::complex(Cow::Borrowed(key), name_len, ty, Some(root), true, many, 0);
        node.parent = parent;
        self.push(node)
    }
}
