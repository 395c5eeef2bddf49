//! generalize as the reference engine's GeneralizeProcessor: the first case whose condition
//! holds for the primitive (`$this`) gives its new value (another FHIRPath expression); no case
//! holding redacts the value, or keeps it under `otherValues: keep`.

use std::cell::Cell;

use serde_json::Value;

use super::{
    config::Generalize,
    document::{Item, NodeId},
    state::{Failure, State},
    security::GENERALIZE,
};
use crate::fhir::fhirpath::{eval_on, Env, Tree};

pub fn apply(run: &mut State, id: NodeId, settings: &Generalize) -> Result<u8, Failure> {
    let node = &run.doc.nodes[id as usize];
    if !node.primitive {
        return Err(Failure::NotApplicable(format!(
            "Generalization is not applicable on the node with type {}. Only FHIR primitive nodes are applicable.",
            node.ty
        )));
    }
    if node.value.is_none() {
        return Ok(0);
    }
    let root = resource_of(run, id);
    let doc = &run.doc;
    let mismatch = Cell::new(false);
    let env = Env { tree: doc, resource: Item::Node(root), resource_type: doc.nodes[root as usize].ty, mismatch: Some(&mismatch) };
    let this = [Item::Node(id)];
    let mut new_value = None;
    for (condition, value) in &settings.cases {
        let holds = matches!(eval_on(condition, &env, &this).as_slice(), [item] if doc.value(item) == Some(&Value::Bool(true)));
        if mismatch.get() {
            return Err("Generalize failed when processing a case: its operands cannot be compared".into());
        }
        if holds {
            let result = eval_on(value, &env, &this);
            new_value = Some(match result.as_slice() {
                [item] => doc.value(item).cloned(),
                _ => None,
            });
            break;
        }
    }
    let node = &mut run.doc.nodes[id as usize];
    match new_value {
        Some(value) => node.value = value,
        None if !settings.keep_other_values => node.value = None,
        None => {}
    }
    Ok(GENERALIZE)
}

fn resource_of(run: &State, mut id: NodeId) -> NodeId {
    while !run.doc.nodes[id as usize].resource {
        match run.doc.nodes[id as usize].parent {
            Some(parent) => id = parent,
            None => break,
        }
    }
    id
}
