//! A resource as the reference engine sees it: a tree of typed nodes (its `ElementNode`), built
//! from JSON with the R4 element graph (build.rs). A primitive and its `_name` sibling are one
//! node (the sibling's id and extensions are its children); a choice element is named by its
//! base name and typed by its suffix. Methods mutate nodes in place; write.rs writes the JSON
//! back, dropping nodes left without value or children.

mod build;
mod write;

use std::{borrow::Cow, cell::Cell};

use serde_json::Value;

use crate::fhir::{
    element_types::{Graph, Primitive, Ty},
    fhirpath::Tree,
};

pub type NodeId = u32;
pub type Children = smallvec::SmallVec<[NodeId; 4]>;

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
    /// Most elements have a few children: kept inline, not allocated.
    pub children: Children,
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
    /// Whether a resource sits inside the root (contained, bundled): only then must the
    /// visit look through the tree for more.
    pub nested: bool,
}

fn type_name(graph: &'static Graph, id: u32) -> &'static str {
    let name = graph.node(id).name.as_str();
    if name.contains('.') { "BackboneElement" } else { name }
}

/// The node array a thread keeps for its next document; an outsized document's is freed.
const KEPT_NODES: usize = 1 << 12;

thread_local! {
    static SPARE_NODES: Cell<Vec<Node>> = const { Cell::new(Vec::new()) };
}

impl Drop for Document {
    /// Leaves the node array to the thread's next document: growing one afresh for every
    /// resource cost more, in copies, than the rules that use it.
    fn drop(&mut self) {
        let mut nodes = std::mem::take(&mut self.nodes);
        if nodes.capacity() <= KEPT_NODES {
            nodes.clear();
            SPARE_NODES.set(nodes);
        }
    }
}

impl Document {
    /// An empty document, in the node array the thread's last one left.
    fn new() -> Self {
        let mut nodes = SPARE_NODES.take();
        nodes.reserve(64);
        Document { nodes, nested: false }
    }

    fn push(&mut self, node: Node) -> NodeId {
        let id = self.nodes.len() as NodeId;
        if let Some(parent) = node.parent {
            self.nodes[parent as usize].children.push(id);
        }
        self.nodes.push(node);
        id
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
        self.nested |= t.resource;
        let node = Node {
            key: t.key.clone(),
            name_len: t.name_len,
            ty: t.ty,
            graph: if t.primitive { None } else { t.graph },
            primitive: t.primitive,
            resource: t.resource,
            many: t.many,
            value: None,
            children: Children::new(),
            parent: None,
        };
        let id = self.push(node);
        match value {
            Value::Object(map) if !self.nodes[id as usize].primitive => self.fill(id, map),
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
        self.nodes[parent as usize].children.retain(|c| *c != child);
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
            children: Children::new(),
            parent: Some(parent),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn complex(key: Cow<'static, str>, name_len: usize, ty: &'static str, graph: Option<u32>, resource: bool, many: bool, parent: NodeId) -> Self {
        Node { key, name_len: name_len as u8, ty, graph, primitive: false, resource, many, value: None, children: Children::new(), parent: Some(parent) }
    }

    fn opaque(key: Cow<'static, str>, name_len: usize, many: bool, value: Value, parent: NodeId) -> Self {
        Node { key, name_len: name_len as u8, ty: "", graph: None, primitive: true, resource: false, many, value: Some(value), children: Children::new(), parent: Some(parent) }
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
