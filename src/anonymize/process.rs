//! The reference engine's visitor and resource processor: every resource of the tree (the
//! resource, then its contained and bundled ones) runs the rules for its type in order; each
//! rule's nodes and their descendants are processed once, so the first rule to reach a node
//! decides it. Operations done are gathered per resource for its security labels.

use std::cell::Cell;

use serde_json::Value;

use super::{
    config::{Method, Rule, Selector},
    crypto, dates,
    document::{Document, Item, NodeId},
    generalize, perturb, redact,
    security::{CRYPTOHASH, ENCRYPT},
    state::{Failure, State},
    substitute, Engine,
};
use crate::fhir::fhirpath::{eval_on, Env};

/// The bucket space a thread keeps for its next resource; an outsized resource's is freed.
const KEPT_BUCKET_ENTRIES: usize = 1 << 16;

thread_local! {
    static BUCKETS: Cell<Vec<Vec<NodeId>>> = const { Cell::new(Vec::new()) };
}

pub struct Run<'e> {
    pub engine: &'e Engine,
    pub state: State,
    /// Operations per resource node, for its labels.
    pub tags: Vec<u8>,
    /// What `dateShiftScope: file | folder` puts before the key ("" for resource).
    pub prefix: &'e str,
    /// The last shift computed and the id or name it was computed for: every date of a
    /// resource shifts by the same days, so its id is hashed once, not once per date.
    shift: Option<(String, i32)>,
}

fn text_of_is_none(value: &Value) -> bool {
    !matches!(value, Value::String(_) | Value::Number(_) | Value::Bool(_))
}

/// A primitive's value as the reference engine's `Value.ToString()` gives it.
pub fn text_of(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(true) => Some("True".into()),
        Value::Bool(false) => Some("False".into()),
        _ => None,
    }
}

impl Run<'_> {
    pub fn new<'e>(engine: &'e Engine, doc: Document, prefix: &'e str) -> Run<'e> {
        let n = doc.nodes.len();
        Run { engine, state: State { doc, visited: vec![false; n] }, tags: vec![0; n], prefix, shift: None }
    }

    /// Visits the tree from `id`: processes each resource before its descendants, and returns
    /// the operations done in it and the resources it holds.
    pub fn visit(&mut self, id: NodeId) -> Result<u8, Failure> {
        let resource = self.state.doc.nodes[id as usize].resource;
        let mut operations = if resource { self.process_resource(id)? } else { 0 };
        let mut i = 0;
        while self.state.doc.nested
            && let Some(&child) = self.state.doc.nodes[id as usize].children.get(i)
        {
            operations |= self.visit(child)?;
            i += 1;
        }
        if resource && self.state.doc.nodes[id as usize].name() != "contained" {
            if self.tags.len() <= id as usize {
                self.tags.resize(id as usize + 1, 0);
            }
            self.tags[id as usize] = operations;
        }
        Ok(operations)
    }

    fn process_resource(&mut self, resource: NodeId) -> Result<u8, Failure> {
        let engine = self.engine;
        let ty = self.state.doc.nodes[resource as usize].ty;
        let rules = engine.rules_for(ty);
        if rules.is_empty() {
            return Ok(0);
        }
        // The lookups of `nodesByType('T')` and `nodesByName('n')` rules, filled in one walk
        // (into the thread's buckets of the previous resource, emptied, not allocated anew).
        let mut buckets = BUCKETS.take();
        buckets.resize_with(engine.lookup_keys.max(buckets.len()), Vec::new);
        buckets.iter_mut().for_each(Vec::clear);
        if engine.lookup_keys > 0 {
            let by_name = !engine.name_keys.is_empty();
            self.state.doc.walk_resource(resource, &mut |id, node| {
                if let Some(&k) = engine.type_keys.get(node.ty) {
                    buckets[k].push(id);
                }
                if by_name && let Some(&k) = engine.name_keys.get(node.name()) {
                    buckets[k].push(id);
                }
            });
        }
        let result = self.run_rules(rules, resource, ty, &buckets);
        if buckets.iter().map(Vec::capacity).sum::<usize>() <= KEPT_BUCKET_ENTRIES {
            BUCKETS.set(buckets);
        }
        result
    }

    fn run_rules(&mut self, rules: &[u16], resource: NodeId, ty: &'static str, buckets: &[Vec<NodeId>]) -> Result<u8, Failure> {
        let engine = self.engine;
        let mut operations = 0;
        let mut matches = Vec::new();
        for &index in rules {
            let rule = &engine.rules[index as usize];
            matches.clear();
            self.select(rule, index, resource, ty, buckets, &mut matches);
            for &node in &matches {
                operations |= self.process_recursive(node, rule).map_err(|e| e.in_rule(&rule.path))?;
            }
        }
        Ok(operations)
    }

    fn select(&self, rule: &Rule, index: u16, resource: NodeId, ty: &str, buckets: &[Vec<NodeId>], out: &mut Vec<NodeId>) {
        let doc = &self.state.doc;
        match &rule.selector {
            Selector::ByType(_, member) | Selector::ByName(_, member) => {
                let bucket = &buckets[self.engine.rule_bucket[index as usize]];
                match member {
                    None => out.extend_from_slice(bucket),
                    Some(member) => {
                        for &node in bucket {
                            out.extend(doc.nodes[node as usize].children.iter().copied().filter(|&c| doc.nodes[c as usize].name() == member));
                        }
                    }
                }
            }
            Selector::Resource => out.push(resource),
            Selector::Expression(expr) => {
                let env = Env { tree: doc, resource: Item::Node(resource), resource_type: ty, mismatch: None };
                out.extend(eval_on(expr, &env, &[Item::Node(resource)]).into_iter().filter_map(|item| match item {
                    Item::Node(id) => Some(id),
                    Item::Value(..) => None,
                }));
            }
        }
    }

    fn process_recursive(&mut self, id: NodeId, rule: &Rule) -> Result<u8, Failure> {
        if self.state.is_visited(id) {
            return Ok(0);
        }
        let mut operations = self.process_node(id, rule)?;
        self.state.mark(id);
        let mut i = 0;
        while let Some(&child) = self.state.doc.nodes[id as usize].children.get(i) {
            if !self.state.doc.nodes[child as usize].resource {
                operations |= self.process_recursive(child, rule)?;
            }
            i += 1;
        }
        Ok(operations)
    }

    /// The days this resource's dates move: by the current id (resource scope; a rule may
    /// have hashed it) or the file or folder name.
    fn shift_days(&mut self) -> i32 {
        let parameters = &self.engine.parameters;
        if let Some(days) = parameters.date_shift_fixed_offset_in_days {
            return days;
        }
        let scope = if self.prefix.is_empty() { self.state.doc.root_id() } else { self.prefix.into() };
        match &self.shift {
            Some((of, days)) if *of == *scope => *days,
            _ => {
                let days = self.engine.shift_key.days(&scope);
                self.shift = Some((scope.into_owned(), days));
                days
            }
        }
    }

    fn process_node(&mut self, id: NodeId, rule: &Rule) -> Result<u8, Failure> {
        let engine = self.engine;
        let parameters = &engine.parameters;
        match &rule.method {
            Method::Keep => Ok(0),
            Method::Substitute(replace_with) => substitute::apply(&mut self.state, id, replace_with),
            Method::Perturb(settings) => perturb::apply(&mut self.state, id, settings),
            Method::Generalize(settings) => generalize::apply(&mut self.state, id, settings),
            method => {
                let node = &self.state.doc.nodes[id as usize];
                let Some(value) = node.value.as_ref() else { return Ok(0) };
                if matches!(value, Value::String(s) if s.is_empty()) {
                    return Ok(0);
                }
                let parent_ty = node.parent.map_or("", |p| self.state.doc.nodes[p as usize].ty);
                // Most redactions only drop the value: no copy of it needed. A property R4 does
                // not define (kept whole as JSON) goes the same way.
                if matches!(method, Method::Redact) && (!redact::is_special(node.ty, node.name(), parent_ty) || text_of_is_none(value)) {
                    self.state.doc.nodes[id as usize].value = None;
                    return Ok(super::security::REDACT);
                }
                if matches!(method, Method::DateShift) && dates::Kind::of(node.ty).is_none() {
                    return Ok(0);
                }
                let Some(text) = text_of(value) else { return Ok(0) };
                let text = if node.ty == "instant" { dates::instant_text(&text) } else { text };
                let (ty, key, name_len) = (node.ty, node.key.clone(), node.name_len as usize);
                let name = &key[..name_len];
                match method {
                    Method::Redact => {
                        let value = &mut self.state.doc.nodes[id as usize].value;
                        Ok(redact::redact(value, &text, ty, name, parent_ty, parameters)?)
                    }
                    Method::DateShift => {
                        let Some(kind) = dates::Kind::of(ty) else { return Ok(0) };
                        let days = self.shift_days();
                        let value = &mut self.state.doc.nodes[id as usize].value;
                        Ok(dates::shift(value, &text, kind, || days, parameters.partial_dates)?)
                    }
                    Method::CryptoHash => {
                        let key = &self.engine.hmac;
                        let hashed = if name.eq_ignore_ascii_case("reference") && parent_ty == "Reference" {
                            crypto::transform_reference_id(&text, |id| key.hash(id))
                        } else {
                            key.hash(&text)
                        };
                        self.state.doc.nodes[id as usize].value = Some(Value::String(hashed));
                        Ok(CRYPTOHASH)
                    }
                    Method::Encrypt => {
                        let encrypted = crypto::encrypt(&text, &self.engine.encrypt_key).ok_or("encryption failed")?;
                        self.state.doc.nodes[id as usize].value = Some(Value::String(encrypted));
                        Ok(ENCRYPT)
                    }
                    _ => Ok(0),
                }
            }
        }
    }
}
