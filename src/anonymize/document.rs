//! A resource as the reference engine sees it: a tree of typed nodes (its `ElementNode`), built
//! from JSON with the R4 element graph. A primitive and its `_name` sibling are one node (the
//! sibling's id and extensions are its children); a choice element is named by its base name
//! and typed by its suffix. Methods mutate nodes in place; `into_json` writes the JSON back,
//! dropping nodes left without value or children.

use std::borrow::Cow;

use serde_json::{Map, Value};

use crate::fhir::{
    element_types::{Graph, Primitive, Ty},
    fhirpath::Tree,
};

pub type NodeId = u32;

#[derive(Debug)]
pub struct Node {
    /// The JSON property name (`valueQuantity`); `name_len` bytes of it are the element name.
    pub key: Cow<'static, str>,
    pub name_len: u8,
    /// The FHIR type: a primitive, a complex type, `BackboneElement`, `Element` (a primitive's
    /// extension holder), a resource type; empty for properties the graph does not know.
    pub ty: &'static str,
    /// The element graph node of a complex or resource node, to type its children.
    graph: Option<u32>,
    pub primitive: bool,
    pub resource: bool,
    /// Whether the property is a JSON array.
    pub many: bool,
    /// A primitive's value; any JSON of a property the graph does not know.
    pub value: Option<Value>,
    pub children: Vec<NodeId>,
    pub parent: Option<NodeId>,
}

impl Node {
    pub fn name(&self) -> &str {
        &self.key[..self.name_len as usize]
    }
}

#[derive(Debug, Default)]
pub struct Document {
    pub nodes: Vec<Node>,
}

fn type_name(graph: &'static Graph, id: u32) -> &'static str {
    let name = graph.node(id).name.as_str();
    if name.contains('.') { "BackboneElement" } else { name }
}

impl Document {
    /// Builds the tree of a resource (taking its values); None when it is not a resource of a
    /// type R4 knows.
    pub fn from_resource(resource: Value) -> Result<Self, Value> {
        let graph = Graph::get();
        let Some(root) = resource.get("resourceType").and_then(Value::as_str).and_then(|t| graph.root(t)) else {
            return Err(resource);
        };
        let Value::Object(map) = resource else { return Err(resource) };
        let mut doc = Document { nodes: Vec::with_capacity(64) };
        let ty = type_name(graph, root);
        doc.nodes.push(Node {
            key: Cow::Borrowed(ty),
            name_len: 0,
            ty,
            graph: Some(root),
            primitive: false,
            resource: true,
            many: false,
            value: None,
            children: Vec::new(),
            parent: None,
        });
        doc.fill(0, map, graph);
        Ok(doc)
    }

    fn push(&mut self, node: Node) -> NodeId {
        let id = self.nodes.len() as NodeId;
        if let Some(parent) = node.parent {
            self.nodes[parent as usize].children.push(id);
        }
        self.nodes.push(node);
        id
    }

    /// Adds the properties of a JSON object as children of `parent` (a complex or resource node).
    fn fill(&mut self, parent: NodeId, map: Map<String, Value>, graph: &'static Graph) {
        let gnode = self.nodes[parent as usize].graph.map(|g| graph.node(g));
        let mut extensions = Vec::new();
        for (key, value) in map {
            if key == "resourceType" && self.nodes[parent as usize].resource {
                continue;
            }
            let child = gnode.and_then(|g| g.child_entry(&key));
            match child {
                Some((_, c)) if c.primitive_extension => extensions.push((key, value)),
                Some((static_key, c)) => {
                    let name_len = if c.choice { choice_base_len(&key, c.ty, graph) } else { key.len() };
                    let key: Cow<'static, str> = Cow::Borrowed(static_key);
                    match value {
                        Value::Array(items) => {
                            for item in items {
                                self.add(parent, key.clone(), name_len, c.ty, true, item, graph);
                            }
                        }
                        item => self.add(parent, key, name_len, c.ty, c.many, item, graph),
                    }
                }
                None => {
                    let len = key.len().min(255);
                    self.push(Node {
                        key: Cow::Owned(key),
                        name_len: len as u8,
                        ty: "",
                        graph: None,
                        primitive: true,
                        resource: false,
                        many: false,
                        value: Some(value),
                        children: Vec::new(),
                        parent: Some(parent),
                    });
                }
            }
        }
        for (key, value) in extensions {
            self.attach_extensions(parent, &key[1..], value, graph);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn add(&mut self, parent: NodeId, key: Cow<'static, str>, name_len: usize, ty: Ty, many: bool, value: Value, graph: &'static Graph) {
        if value.is_null() {
            // A null in a primitive array stands beside a `_name` entry; keep its place.
            if let Ty::Primitive(p) = ty {
                self.push(Node::primitive(key, name_len, p, many, None, parent));
            }
            return;
        }
        match ty {
            Ty::Primitive(p) => {
                self.push(Node::primitive(key, name_len, p, many, Some(value), parent));
            }
            Ty::Node(g) => {
                let Value::Object(map) = value else {
                    self.push(Node::opaque(key, name_len, many, value, parent));
                    return;
                };
                let id = self.push(Node::complex(key, name_len, type_name(graph, g), Some(g), false, many, parent));
                self.fill(id, map, graph);
            }
            Ty::Resource(_) => {
                let root = value.get("resourceType").and_then(Value::as_str).and_then(|t| graph.root(t));
                match (root, value) {
                    (Some(root), Value::Object(map)) => {
                        let id = self.push(Node::complex(key, name_len, type_name(graph, root), Some(root), true, many, parent));
                        self.fill(id, map, graph);
                    }
                    (_, value) => {
                        self.push(Node::opaque(key, name_len, many, value, parent));
                    }
                }
            }
        }
    }

    /// Gives the primitives named `key` under `parent` the id and extensions of `_key`.
    fn attach_extensions(&mut self, parent: NodeId, key: &str, value: Value, graph: &'static Graph) {
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
                    let Some(p) = graph.node(self.nodes[parent as usize].graph.unwrap_or_default()).child(key) else { continue };
                    let Ty::Primitive(prim) = p.ty else { continue };
                    let name_len = if p.choice { choice_base_len(key, p.ty, graph) } else { key.len() };
                    self.push(Node::primitive(Cow::Owned(key.to_owned()), name_len, prim, p.many, None, parent))
                }
            };
            self.nodes[target as usize].graph = element;
            self.fill(target, map, graph);
        }
    }

    /// Writes the tree back as JSON, dropping empty nodes; `tags` adds security labels to a
    /// resource node's meta.
    pub fn to_json(&self, id: NodeId, tags: &dyn Fn(NodeId) -> u8) -> Option<Value> {
        let node = &self.nodes[id as usize];
        if node.primitive {
            return node.value.clone();
        }
        let mut map = Map::with_capacity(node.children.len() + usize::from(node.resource));
        if node.resource {
            map.insert("resourceType".into(), Value::String(node.ty.into()));
        }
        self.write_children(node, &mut map, tags);
        if node.resource {
            super::security::tag(&mut map, tags(id));
            return Some(Value::Object(map));
        }
        (!map.is_empty()).then_some(Value::Object(map))
    }

    fn write_children(&self, node: &Node, map: &mut Map<String, Value>, tags: &dyn Fn(NodeId) -> u8) {
        for &child in &node.children {
            let c = &self.nodes[child as usize];
            let value = self.to_json(child, tags);
            let extension = if c.primitive && !c.children.is_empty() {
                let mut ext = Map::new();
                self.write_children(c, &mut ext, tags);
                (!ext.is_empty()).then_some(Value::Object(ext))
            } else {
                None
            };
            if c.many {
                if value.is_none() && extension.is_none() {
                    continue;
                }
                if c.primitive {
                    let len = push_item(map, &c.key, value.unwrap_or(Value::Null));
                    if let Some(extension) = extension {
                        let ext = map.entry(format!("_{}", c.key)).or_insert_with(|| Value::Array(Vec::new()));
                        if let Value::Array(items) = ext {
                            // Keep `name` and `_name` aligned: nulls where a value has no extension.
                            items.resize(len, Value::Null);
                            items.push(extension);
                        }
                    }
                } else if let Some(value) = value {
                    push_item(map, &c.key, value);
                }
            } else {
                if let Some(value) = value {
                    map.insert(c.key.to_string(), value);
                }
                if let Some(extension) = extension {
                    map.insert(format!("_{}", c.key), extension);
                }
            }
        }
        // A primitive array whose values all went keeps no list of nulls; `_name` lists end as
        // long as their `name` list.
        map.retain(|_, v| !matches!(v, Value::Array(items) if items.iter().all(Value::is_null)));
        if map.keys().any(|k| k.starts_with('_')) {
            let lengths: Vec<(String, usize)> = map
                .iter()
                .filter_map(|(k, v)| Some((format!("_{k}"), v.as_array()?.len())))
                .filter(|(k, _)| map.contains_key(k))
                .collect();
            for (key, len) in lengths {
                if let Some(Value::Array(items)) = map.get_mut(&key)
                    && items.len() < len
                {
                    items.resize(len, Value::Null);
                }
            }
        }
    }

    /// Self and descendants, not entering nested resources, in document order.
    pub fn walk_resource(&self, root: NodeId, visit: &mut impl FnMut(NodeId, &Node)) {
        for &child in &self.nodes[root as usize].children {
            let node = &self.nodes[child as usize];
            visit(child, node);
            if !node.resource {
                self.walk_resource(child, visit);
            }
        }
    }

    /// The root resource's current `id` (what `dateShiftScope: resource` hashes).
    pub fn root_id(&self) -> Cow<'_, str> {
        self.nodes
            .first()
            .and_then(|root| root.children.iter().map(|&c| &self.nodes[c as usize]).find(|n| &*n.key == "id"))
            .and_then(|n| n.value.as_ref())
            .map(|v| match v {
                Value::String(s) => Cow::Borrowed(s.as_str()),
                other => Cow::Owned(other.to_string()),
            })
            .unwrap_or_default()
    }

    /// A detached node like `template` (same element and type) holding `value`: a primitive's
    /// value, or a complex node's properties (substitute's replacement).
    pub fn detached_like(&mut self, template: NodeId, value: Value) -> NodeId {
        let t = &self.nodes[template as usize];
        let node = Node {
            key: t.key.clone(),
            name_len: t.name_len,
            ty: t.ty,
            graph: if t.primitive { None } else { t.graph },
            primitive: t.primitive,
            resource: t.resource,
            many: t.many,
            value: None,
            children: Vec::new(),
            parent: None,
        };
        let id = self.push(node);
        match value {
            Value::Object(map) if !self.nodes[id as usize].primitive => self.fill(id, map, Graph::get()),
            Value::Null => {}
            other => self.nodes[id as usize].value = Some(other),
        }
        id
    }

    /// Moves `child` (detached) to the end of `parent`'s children.
    pub fn adopt(&mut self, parent: NodeId, child: NodeId) {
        self.nodes[child as usize].parent = Some(parent);
        self.nodes[parent as usize].children.push(child);
    }

    pub fn remove_child(&mut self, parent: NodeId, child: NodeId) {
        self.nodes[parent as usize].children.retain(|&c| c != child);
        self.nodes[child as usize].parent = None;
    }
}

impl Node {
    fn primitive(key: Cow<'static, str>, name_len: usize, p: Primitive, many: bool, value: Option<Value>, parent: NodeId) -> Self {
        Node {
            key,
            name_len: name_len as u8,
            ty: p.name(),
            graph: None,
            primitive: true,
            resource: false,
            many,
            value,
            children: Vec::new(),
            parent: Some(parent),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn complex(key: Cow<'static, str>, name_len: usize, ty: &'static str, graph: Option<u32>, resource: bool, many: bool, parent: NodeId) -> Self {
        Node { key, name_len: name_len as u8, ty, graph, primitive: false, resource, many, value: None, children: Vec::new(), parent: Some(parent) }
    }

    fn opaque(key: Cow<'static, str>, name_len: usize, many: bool, value: Value, parent: NodeId) -> Self {
        Node { key, name_len: name_len as u8, ty: "", graph: None, primitive: true, resource: false, many, value: Some(value), children: Vec::new(), parent: Some(parent) }
    }
}

/// Appends to the array under `key` (made on first use); returns the index of the new item.
fn push_item(map: &mut Map<String, Value>, key: &str, value: Value) -> usize {
    match map.get_mut(key) {
        Some(Value::Array(items)) => {
            items.push(value);
            items.len() - 1
        }
        _ => {
            map.insert(key.to_owned(), Value::Array(vec![value]));
            0
        }
    }
}

/// The length of a choice element's base name in its JSON name (`valueQuantity`: 5).
fn choice_base_len(key: &str, ty: Ty, graph: &'static Graph) -> usize {
    let code = match ty {
        Ty::Primitive(p) => p.name(),
        Ty::Node(n) | Ty::Resource(Some(n)) => graph.node(n).name.as_str(),
        Ty::Resource(None) => "Resource",
    };
    key.len().saturating_sub(code.len()).min(255)
}

/// An item of a FHIRPath collection over a document: a node, or a computed value.
#[derive(Debug, Clone)]
pub enum Item {
    Node(NodeId),
    Value(Value, &'static str),
}

impl Tree for Document {
    type Item = Item;

    fn literal(&self, value: Value, ty: &'static str) -> Item {
        Item::Value(value, ty)
    }

    fn value<'s>(&'s self, item: &'s Item) -> Option<&'s Value> {
        match item {
            Item::Node(id) => self.nodes.get(*id as usize)?.value.as_ref(),
            Item::Value(v, _) => Some(v),
        }
    }

    fn type_name<'s>(&'s self, item: &'s Item) -> Option<&'s str> {
        match item {
            Item::Node(id) => self.nodes.get(*id as usize).map(|n| n.ty).filter(|t| !t.is_empty()),
            Item::Value(_, ty) => Some(ty),
        }
    }

    fn name<'s>(&'s self, item: &'s Item) -> Option<&'s str> {
        match item {
            Item::Node(id) => self.nodes.get(*id as usize).map(Node::name),
            Item::Value(..) => None,
        }
    }

    fn members(&self, item: &Item, name: &str, out: &mut Vec<Item>) {
        let Item::Node(id) = item else { return };
        let Some(node) = self.nodes.get(*id as usize) else { return };
        out.extend(node.children.iter().filter(|&&c| self.nodes[c as usize].name() == name).map(|&c| Item::Node(c)));
    }

    fn children(&self, item: &Item, out: &mut Vec<Item>) {
        let Item::Node(id) = item else { return };
        let Some(node) = self.nodes.get(*id as usize) else { return };
        out.extend(node.children.iter().map(|&c| Item::Node(c)));
    }

    fn is_resource(&self, item: &Item) -> bool {
        matches!(item, Item::Node(id) if self.nodes.get(*id as usize).is_some_and(|n| n.resource))
    }

    fn same(&self, a: &Item, b: &Item) -> bool {
        matches!((a, b), (Item::Node(x), Item::Node(y)) if x == y)
    }

    fn resolve(&self, item: &Item) -> Option<Item> {
        let mut refs = Vec::new();
        self.members(item, "reference", &mut refs);
        let reference = refs.first().and_then(|r| self.value(r)).and_then(Value::as_str)?;
        let ty = crate::fhir::fhirpath::referenced_type(reference)?;
        let ty = crate::fhir::ResourceType::parse(ty)?.as_str();
        Some(Item::Value(Value::Null, ty))
    }
}
