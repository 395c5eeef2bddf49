//! A FHIRPath evaluator: the part of the language the R4 search-parameter expressions and the
//! de-identification rules of Microsoft's FHIR Tools for Anonymization use. `parse` compiles a
//! text once; `eval` runs it over any `Tree` (plain JSON for search, the typed document of
//! `anonymize`). Anything outside the subset fails to parse with a `ParseError` naming it, and
//! evaluation is total: odd data gives an empty collection, never a panic.

mod eval;
mod json;
mod parse;

pub use eval::{eval_on, Env, Tree};
pub use json::{evaluate, referenced_type, Item};
pub use parse::parse;

/// Why an expression is outside the FHIRPath this server evaluates.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

impl ParseError {
    fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// The context item (`$this`), implicit at the start of a path inside `where(...)`.
    This,
    /// `%resource`, `%rootResource`, `%context`: the resource the expression runs on.
    Resource,
    /// A leading name: the root type (`Observation.code`) or a member of the context.
    Name(String),
    Member(Box<Expr>, String),
    Index(Box<Expr>, usize),
    Call(Box<Expr>, Function),
    Str(String),
    Bool(bool),
    Int(i64),
    Num(f64),
    /// `@2020-01-01`, `@2020-01-01T10:00:00Z`, `@T10:00`: the text after `@` and its type.
    Date(String, &'static str),
    Union(Box<Expr>, Box<Expr>),
    Equals(Box<Expr>, Box<Expr>, bool),
    Compare(Box<Expr>, Cmp, Box<Expr>),
    /// `a in b` (false) and `b contains a` (true), both stored as (element, collection).
    In(Box<Expr>, Box<Expr>),
    Arith(Box<Expr>, Arith, Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Xor(Box<Expr>, Box<Expr>),
    Implies(Box<Expr>, Box<Expr>),
    Is(Box<Expr>, String),
    As(Box<Expr>, String),
    Negate(Box<Expr>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arith {
    Add,
    Sub,
    Mul,
    Div,
    /// Integer division and remainder (`div`, `mod`).
    IntDiv,
    Mod,
    /// `&`: string concatenation where an empty operand counts as ''.
    Concat,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Function {
    Where(Box<Expr>),
    Select(Box<Expr>),
    All(Box<Expr>),
    OfType(String),
    IsType(String),
    /// `exists()`, or `exists(criteria)`.
    Exists(Option<Box<Expr>>),
    Empty,
    HasValue,
    First,
    Last,
    Tail,
    Single,
    Count,
    Distinct,
    Not,
    Resolve,
    /// `nodesByType('T')` of the anonymization engine: self and descendants of type T, not
    /// entering contained or bundled resources.
    NodesByType(String),
    /// `nodesByName('n')`: self and descendants named n, likewise.
    NodesByName(String),
    Children,
    Descendants,
    Extension(Box<Expr>),
    StartsWith(Box<Expr>),
    EndsWith(Box<Expr>),
    Contains(Box<Expr>),
    Matches(Box<Expr>),
    ReplaceMatches(Box<Expr>, Box<Expr>),
    Replace(Box<Expr>, Box<Expr>),
    IndexOf(Box<Expr>),
    Substring(Box<Expr>, Option<Box<Expr>>),
    Length,
    Upper,
    Lower,
    Trim,
    ToString,
    Iif(Box<Expr>, Box<Expr>, Option<Box<Expr>>),
}
