//! substitute as the reference engine's SubstituteProcessor: a primitive takes `replaceWith` as
//! its value; a complex node becomes the `replaceWith` object, element by element, keeping
//! what earlier rules already processed (and the nodes leading to it).

use rustc_hash::FxHashSet;
use serde_json::Value;

use super::{document::NodeId, state::{Failure, State}, security::SUBSTITUTE};

pub fn apply(run: &mut State, id: NodeId, replace_with: &Value) -> Result<u8, Failure> {
    let primitive = run.doc.nodes[id as usize].primitive;
    let replacement = if primitive {
        // The reference reads the setting's text: a string as is, anything else as JSON text.
        let text = match replace_with {
            Value::Null => None,
            Value::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        };
        run.doc.detached_like(id, text.map_or(Value::Null, Value::String))
    } else {
        let object = match replace_with {
            Value::Null => Value::Object(Default::default()),
            Value::Object(_) => replace_with.clone(),
            Value::String(s) => match serde_json::from_str(s) {
                Ok(v @ Value::Object(_)) => v,
                _ => return Err(format!("replaceWith is not a {} in JSON", run.doc.nodes[id as usize].ty).into()),
            },
            _ => return Err(format!("replaceWith is not a {} in JSON", run.doc.nodes[id as usize].ty).into()),
        };
        let replacement = run.doc.detached_like(id, object);
        check_replacement(run, replacement, run.doc.nodes[id as usize].ty)?;
        replacement
    };
    let mut keep = FxHashSet::default();
    keep_set(run, id, &mut keep);
    substitute(run, id, Some(replacement), &keep);
    run.mark_descendants(id);
    Ok(SUBSTITUTE)
}

/// A replacement must be the element's type: elements it does not have are refused, as the
/// reference engine's parser refuses them; an empty string is no value.
fn check_replacement(run: &mut State, id: NodeId, ty: &str) -> Result<(), Failure> {
    for i in 0..run.doc.nodes[id as usize].children.len() {
        let child = run.doc.nodes[id as usize].children[i];
        let node = &mut run.doc.nodes[child as usize];
        if node.ty.is_empty() {
            return Err(Failure::NotApplicable(format!("replaceWith has '{}', which a {ty} does not have", node.key)));
        }
        if matches!(&node.value, Some(Value::String(s)) if s.is_empty()) {
            node.value = None;
        }
        check_replacement(run, child, ty)?;
    }
    Ok(())
}

/// Nodes processed before, and every node above one: they stay through the substitution.
fn keep_set(run: &State, id: NodeId, keep: &mut FxHashSet<NodeId>) -> bool {
    let mut should_keep = false;
    for &child in &run.doc.nodes[id as usize].children {
        should_keep |= keep_set(run, child, keep);
    }
    if should_keep || run.is_visited(id) {
        keep.insert(id);
        return true;
    }
    false
}

/// Makes `node` the `replacement` node (None: an empty one, keeping only what must stay).
fn substitute(run: &mut State, node: NodeId, replacement: Option<NodeId>, keep: &FxHashSet<NodeId>) {
    if run.is_visited(node) {
        return;
    }
    let mut names: Vec<String> = Vec::new();
    if let Some(r) = replacement {
        for &c in &run.doc.nodes[r as usize].children {
            let name = run.doc.nodes[c as usize].name();
            if !names.iter().any(|n| n == name) {
                names.push(name.to_owned());
            }
        }
    }
    let named = |run: &State, parent: NodeId, name: &str| -> Vec<NodeId> {
        run.doc.nodes[parent as usize].children.iter().copied().filter(|&c| run.doc.nodes[c as usize].name() == name).collect()
    };
    for name in &names {
        let children = named(run, node, name);
        let targets = named(run, replacement.expect("names come from a replacement"), name);
        let mut i = 0;
        for child in children {
            if run.is_visited(child) {
                i += 1;
                continue;
            }
            if i < targets.len() {
                substitute(run, child, Some(targets[i]), keep);
                i += 1;
            } else if keep.contains(&child) {
                substitute(run, child, None, keep);
            } else {
                run.doc.remove_child(node, child);
            }
        }
        for &target in &targets[i.min(targets.len())..] {
            if let Some(r) = replacement {
                run.doc.remove_child(r, target);
            }
            run.doc.adopt(node, target);
        }
    }
    let others: Vec<NodeId> = run.doc.nodes[node as usize]
        .children
        .iter()
        .copied()
        .filter(|&c| !names.iter().any(|n| n == run.doc.nodes[c as usize].name()))
        .collect();
    for child in others {
        if run.is_visited(child) {
            continue;
        }
        if keep.contains(&child) {
            substitute(run, child, None, keep);
        } else {
            run.doc.remove_child(node, child);
        }
    }
    let value = replacement.and_then(|r| run.doc.nodes[r as usize].value.clone());
    run.doc.nodes[node as usize].value = value;
}
