//! What the methods work on: the document and which of its nodes a rule already processed
//! (the reference engine's visited set), and why processing stopped.

use super::document::{Document, NodeId};

/// Why processing a resource stopped.
#[derive(Debug)]
pub enum Failure {
    /// A value the method could not process: `processingErrors` decides.
    Processing(String),
    /// A rule that does not fit the node it selected (generalize on a complex node): always an
    /// error, as the reference engine reports it as a configuration error.
    NotApplicable(String),
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Failure::Processing(message)
    }
}

impl From<&str> for Failure {
    fn from(message: &str) -> Self {
        Failure::Processing(message.to_owned())
    }
}

impl Failure {
    pub fn in_rule(self, path: &str) -> Self {
        match self {
            Failure::Processing(m) => Failure::Processing(format!("rule '{path}': {m}")),
            Failure::NotApplicable(m) => Failure::NotApplicable(format!("rule '{path}': {m}")),
        }
    }
}

pub struct State {
    pub doc: Document,
    pub visited: Vec<bool>,
}

impl State {
    pub fn mark(&mut self, id: NodeId) {
        if self.visited.len() <= id as usize {
            self.visited.resize(self.doc.nodes.len().max(id as usize + 1), false);
        }
        self.visited[id as usize] = true;
    }

    pub fn is_visited(&self, id: NodeId) -> bool {
        self.visited.get(id as usize).copied().unwrap_or(false)
    }

    /// Marks a node's descendants processed (after substitute and perturb).
    pub fn mark_descendants(&mut self, id: NodeId) {
        let mut i = 0;
        while let Some(&child) = self.doc.nodes[id as usize].children.get(i) {
            self.mark(child);
            self.mark_descendants(child);
            i += 1;
        }
    }
}
