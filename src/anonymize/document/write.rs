//! Writes a document back as JSON text, straight from its nodes (no `Value` maps): a property
//! whose nodes all went is dropped, the items of an array stay in order with `_name` lists kept
//! aligned to their `name` lists (nulls where a value has no extension), and a resource that
//! was changed gets its security labels in `meta`.

use serde_json::{Map, Value};

use super::{Document, NodeId};
use crate::anonymize::security;

/// One item of a property's value: a node's value, a primitive's `_name` object, or a null.
#[derive(Clone, Copy)]
enum Part {
    Value(NodeId),
    Extension(NodeId),
    Null,
}

enum Body {
    One(Part),
    Many(Vec<Part>),
}

/// One property of an object: its JSON name (`_` + name for a primitive's extensions).
struct Entry<'a> {
    key: &'a str,
    underscore: bool,
    body: Body,
    /// Nulls to add to a single value that is an array (a `_name` list of a property the
    /// graph does not know, shorter than its `name` list).
    pad: usize,
}

impl Entry<'_> {
    fn is(&self, key: &str, underscore: bool) -> bool {
        match (self.underscore, underscore) {
            (a, b) if a == b => self.key == key,
            (false, true) => self.key.strip_prefix('_') == Some(key),
            (true, false) => key.strip_prefix('_') == Some(self.key),
            _ => false,
        }
    }

    fn starts_with_underscore(&self) -> bool {
        self.underscore || self.key.starts_with('_')
    }
}

/// What each node gives its parent's object: a value, and (primitives) an extension object.
#[derive(Clone, Copy, Default)]
struct Gives {
    value: bool,
    extension: bool,
}

impl Document {
    /// Writes node `id` (a resource) as JSON to `out`; `tags` gives the security labels of
    /// each resource node.
    pub fn write(&self, id: NodeId, tags: &dyn Fn(NodeId) -> u8, out: &mut Vec<u8>) {
        let gives = self.gives();
        Writer { doc: self, gives: &gives, tags, out }.node(id);
    }

    /// Whether each node writes anything: children come after their parent, so one pass from
    /// the last node back sees every child before its parent.
    fn gives(&self) -> Vec<Gives> {
        let mut gives = vec![Gives::default(); self.nodes.len()];
        for id in (0..self.nodes.len()).rev() {
            let node = &self.nodes[id];
            let survives = |c: NodeId| {
                let (child, g) = (&self.nodes[c as usize], gives[c as usize]);
                let value = if child.many {
                    !matches!(child.value, Some(Value::Null)) || !child.primitive
                } else {
                    !all_null_array(child.value.as_ref()) || !child.primitive
                };
                (g.value && value) || g.extension
            };
            let any = node.children.iter().any(|&c| survives(c));
            gives[id] =
                if node.primitive { Gives { value: node.value.is_some(), extension: any } } else { Gives { value: node.resource || any, extension: false } };
        }
        gives
    }
}

/// Whether `value` is an array of nulls only (dropped, as a property whose values all went).
fn all_null_array(value: Option<&Value>) -> bool {
    matches!(value, Some(Value::Array(items)) if items.iter().all(Value::is_null))
}

struct Writer<'a> {
    doc: &'a Document,
    gives: &'a [Gives],
    tags: &'a dyn Fn(NodeId) -> u8,
    out: &'a mut Vec<u8>,
}

impl Writer<'_> {
    /// A node's value: a primitive's JSON, or an object of its children.
    fn node(&mut self, id: NodeId) {
        let node = &self.doc.nodes[id as usize];
        if node.primitive {
            write_value(self.out, node.value.as_ref().unwrap_or(&Value::Null));
            return;
        }
        self.out.push(b'{');
        let mut first = true;
        if node.resource {
            self.out.extend_from_slice(b"\"resourceType\":");
            write_str(self.out, node.ty);
            first = false;
        }
        let tags = if node.resource { (self.tags)(id) } else { 0 };
        let mut tagged = false;
        for entry in entries(self.doc, self.gives, id) {
            if !std::mem::take(&mut first) {
                self.out.push(b',');
            }
            write_key(self.out, &entry);
            if tags != 0 && !entry.underscore && entry.key == "meta" {
                self.write_meta_with_labels(&entry, tags);
                tagged = true;
            } else {
                self.body(&entry);
            }
        }
        if tags != 0 && !tagged {
            if !first {
                self.out.push(b',');
            }
            self.out.extend_from_slice(b"\"meta\":{\"security\":");
            security::write_labels(self.out, tags);
            self.out.push(b'}');
        }
        self.out.push(b'}');
    }

    /// A primitive's `_name` object: its id and extensions.
    fn extension(&mut self, id: NodeId) {
        self.out.push(b'{');
        for (i, entry) in entries(self.doc, self.gives, id).into_iter().enumerate() {
            if i > 0 {
                self.out.push(b',');
            }
            write_key(self.out, &entry);
            self.body(&entry);
        }
        self.out.push(b'}');
    }

    fn part(&mut self, part: Part) {
        match part {
            Part::Value(id) => self.node(id),
            Part::Extension(id) => self.extension(id),
            Part::Null => self.out.extend_from_slice(b"null"),
        }
    }

    fn body(&mut self, entry: &Entry) {
        match &entry.body {
            Body::One(Part::Value(id)) if entry.pad > 0 => {
                let mut value = self.doc.nodes[*id as usize].value.clone().unwrap_or(Value::Null);
                if let Value::Array(items) = &mut value {
                    items.resize(items.len() + entry.pad, Value::Null);
                }
                write_value(self.out, &value);
            }
            Body::One(part) => self.part(*part),
            Body::Many(parts) => {
                self.out.push(b'[');
                for (i, part) in parts.iter().enumerate() {
                    if i > 0 {
                        self.out.push(b',');
                    }
                    self.part(*part);
                }
                self.out.push(b']');
            }
        }
    }

    /// An entry's value as a `Value` (for `meta`, which gets the labels).
    fn value_of(&mut self, entry: &Entry) -> Value {
        let mut text = Vec::new();
        let mut writer = Writer { doc: self.doc, gives: self.gives, tags: self.tags, out: &mut text };
        writer.body(entry);
        serde_json::from_slice(&text).unwrap_or(Value::Null)
    }

    /// A resource's `meta` with the labels of `tags`: appended as a `security` list when it
    /// has none (written as it is, then the list), merged through a `Value` when it has one.
    fn write_meta_with_labels(&mut self, entry: &Entry, tags: u8) {
        if let Body::One(Part::Value(id)) = entry.body {
            let node = &self.doc.nodes[id as usize];
            if !node.primitive && !node.children.iter().any(|&c| self.doc.nodes[c as usize].name() == "security") {
                self.node(id);
                // The object's closing brace, reopened for the list.
                self.out.pop();
                if self.out.last() != Some(&b'{') {
                    self.out.push(b',');
                }
                self.out.extend_from_slice(b"\"security\":");
                security::write_labels(self.out, tags);
                self.out.push(b'}');
                return;
            }
        }
        let mut holder = Map::new();
        holder.insert("meta".into(), self.value_of(entry));
        security::tag(&mut holder, tags);
        write_value(self.out, holder.get("meta").unwrap_or(&Value::Null));
    }
}

/// The properties of node `id`'s object, in the order they are first written; arrays of
/// nothing dropped; `_name` lists padded to their `name` lists.
fn entries<'a>(doc: &'a Document, gives: &[Gives], id: NodeId) -> Vec<Entry<'a>> {
    let mut entries: Vec<Entry> = Vec::with_capacity(doc.nodes[id as usize].children.len());
    for &c in &doc.nodes[id as usize].children {
        let (child, gives) = (&doc.nodes[c as usize], gives[c as usize]);
        let key = &*child.key;
        if child.many {
            if !gives.value && !gives.extension {
                continue;
            }
            if child.primitive {
                let at = push_item(&mut entries, key, if gives.value { Part::Value(c) } else { Part::Null });
                if gives.extension {
                    let list = match position(&entries, key, true) {
                        Some(i) => &mut entries[i],
                        None => {
                            entries.push(Entry { key, underscore: true, body: Body::Many(Vec::new()), pad: 0 });
                            entries.last_mut().expect("just pushed")
                        }
                    };
                    if let Body::Many(parts) = &mut list.body {
                        parts.resize(at, Part::Null);
                        parts.push(Part::Extension(c));
                    }
                }
            } else if gives.value {
                push_item(&mut entries, key, Part::Value(c));
            }
        } else {
            if gives.value {
                insert(&mut entries, key, false, Body::One(Part::Value(c)));
            }
            if gives.extension {
                insert(&mut entries, key, true, Body::One(Part::Extension(c)));
            }
        }
    }
    entries.retain(|e| !all_null(doc, e));
    if entries.iter().any(Entry::starts_with_underscore) {
        for i in 0..entries.len() {
            let Some(len) = array_len(doc, &entries[i]) else {
                continue;
            };
            let (key, underscore) = (entries[i].key, entries[i].underscore);
            if underscore {
                continue;
            }
            let Some(j) = position(&entries, key, true) else {
                continue;
            };
            let have = array_len(doc, &entries[j]).unwrap_or(usize::MAX);
            if have < len {
                match &mut entries[j].body {
                    Body::Many(parts) => parts.resize(len, Part::Null),
                    Body::One(_) => entries[j].pad = len - have,
                }
            }
        }
    }
    entries
}

/// Whether the entry would be written as an array of nulls only.
fn all_null(doc: &Document, entry: &Entry) -> bool {
    let null = |part: &Part| match part {
        Part::Null => true,
        Part::Value(id) => {
            let node = &doc.nodes[*id as usize];
            node.primitive && matches!(node.value, Some(Value::Null) | None)
        }
        Part::Extension(_) => false,
    };
    match &entry.body {
        Body::Many(parts) => parts.iter().all(null),
        Body::One(Part::Value(id)) => {
            let node = &doc.nodes[*id as usize];
            node.primitive && all_null_array(node.value.as_ref())
        }
        Body::One(_) => false,
    }
}

/// The length of the array the entry is written as, if it is one.
fn array_len(doc: &Document, entry: &Entry) -> Option<usize> {
    match &entry.body {
        Body::Many(parts) => Some(parts.len()),
        Body::One(Part::Value(id)) => {
            let node = &doc.nodes[*id as usize];
            match (&node.value, node.primitive) {
                (Some(Value::Array(items)), true) => Some(items.len() + entry.pad),
                _ => None,
            }
        }
        Body::One(_) => None,
    }
}

fn position(entries: &[Entry], key: &str, underscore: bool) -> Option<usize> {
    // The entry just written is the usual match: look from the end.
    entries.iter().rposition(|e| e.is(key, underscore))
}

/// Sets a property's value, in its first place if it is there already.
fn insert<'a>(entries: &mut Vec<Entry<'a>>, key: &'a str, underscore: bool, body: Body) {
    match position(entries, key, underscore) {
        Some(i) => {
            entries[i].body = body;
            entries[i].pad = 0;
        }
        None => entries.push(Entry { key, underscore, body, pad: 0 }),
    }
}

/// Appends to the array of `key` (made on first use); returns the index of the new item.
fn push_item<'a>(entries: &mut Vec<Entry<'a>>, key: &'a str, part: Part) -> usize {
    if let Some(i) = position(entries, key, false)
        && let Body::Many(parts) = &mut entries[i].body
    {
        parts.push(part);
        return parts.len() - 1;
    }
    insert(entries, key, false, Body::Many(vec![part]));
    0
}

fn write_key(out: &mut Vec<u8>, entry: &Entry) {
    if entry.underscore {
        write_str(out, &format!("_{}", entry.key));
    } else {
        write_str(out, entry.key);
    }
    out.push(b':');
}

/// A JSON string: copied whole when nothing in it needs escaping (almost every value and
/// key), else escaped by serde_json.
fn write_str(out: &mut Vec<u8>, text: &str) {
    if needs_escape(text.as_bytes()) {
        // Writing to a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, text);
    } else {
        out.reserve(text.len() + 2);
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    }
}

/// Whether JSON must escape any byte: a quote, a backslash or a control character, as
/// serde_json escapes them (other bytes, UTF-8 included, are written as they are).
fn needs_escape(bytes: &[u8]) -> bool {
    let escaped = |b: u8| b < 0x20 || b == b'"' || b == b'\\';
    // Whole chunks without an early exit, which the compiler turns into vector compares.
    let mut chunks = bytes.chunks_exact(16);
    for chunk in &mut chunks {
        if chunk.iter().fold(false, |any, &b| any | escaped(b)) {
            return true;
        }
    }
    chunks.remainder().iter().any(|&b| escaped(b))
}

fn write_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::String(text) => write_str(out, text),
        // Writing to a Vec cannot fail.
        other => drop(serde_json::to_writer(&mut *out, other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_written_as_serde_json_writes_them() {
        let mut texts: Vec<String> = ["", "plain", "ÆŊŋßſ♫∅ 日本", "a\"b", "back\\slash", "tab\there", "\u{7f} del is not escaped", "\u{1f}"]
            .iter()
            .map(|t| t.to_string())
            .collect();
        // Every ASCII byte at every place of a 16-byte chunk and of the tail.
        for b in 0u8..0x80 {
            for at in [0, 7, 15, 16, 20, 31] {
                let mut text = "x".repeat(33);
                text.replace_range(at..at + 1, &char::from(b).to_string());
                texts.push(text);
            }
        }
        for text in texts {
            let mut ours = Vec::new();
            write_str(&mut ours, &text);
            assert_eq!(String::from_utf8(ours).unwrap(), serde_json::to_string(&text).unwrap(), "{text:?}");
        }
    }
}
