//! A small FHIRPath evaluator: the part of the language the R4 search-parameter expressions use.
//! Paths (with choice elements: `Observation.value` reaches `valueQuantity`), `[n]`, `|` unions,
//! `where(...)`, `ofType(T)`, `as T`, `is T`, `resolve()` (which, without a server to ask, knows
//! only the type a reference names: enough for `where(resolve() is Patient)`), `exists()`,
//! `empty()`, `first()`, `not()`, `=`, `!=`, `and`, `or`, and string/boolean/number literals.
//! Anything else fails to parse, and its search parameter is reported as not supported.

use std::borrow::Cow;

use serde_json::Value;

use crate::fhir::ResourceType;

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// The context item (`$this`), implicit at the start of a path inside `where(...)`.
    This,
    /// A leading name: the root type (`Observation.code`) or a member of the context.
    Name(String),
    Member(Box<Expr>, String),
    Index(Box<Expr>, usize),
    Call(Box<Expr>, Function),
    Str(String),
    Bool(bool),
    Num(f64),
    Union(Box<Expr>, Box<Expr>),
    Equals(Box<Expr>, Box<Expr>, bool),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Is(Box<Expr>, String),
    As(Box<Expr>, String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Function {
    Where(Box<Expr>),
    OfType(String),
    Exists,
    Empty,
    First,
    Not,
    Resolve,
}

/// One item of a collection: a JSON node, and its FHIR type where the path tells it (a choice
/// element's suffix, or what `resolve()` found). Other types are left unknown.
#[derive(Debug, Clone)]
pub struct Item<'a> {
    pub value: Cow<'a, Value>,
    pub ty: Option<Cow<'a, str>>,
}

impl<'a> Item<'a> {
    fn node(value: &'a Value, ty: Option<&'a str>) -> Self {
        Self { value: Cow::Borrowed(value), ty: ty.map(Cow::Borrowed) }
    }

    fn boolean(b: bool) -> Self {
        Self { value: Cow::Owned(Value::Bool(b)), ty: Some(Cow::Borrowed("boolean")) }
    }

    /// Whether this item is of FHIR type `name` (`dateTime` and the suffix `DateTime` agree).
    pub fn is_type(&self, name: &str) -> bool {
        self.ty.as_deref().is_some_and(|t| t.eq_ignore_ascii_case(name))
    }
}

/// Data types that may follow a choice element's name (`value[x]` as `valueQuantity`).
const CHOICE_TYPES: [&str; 50] = [
    "Base64Binary", "Boolean", "Canonical", "Code", "Date", "DateTime", "Decimal", "Id", "Instant", "Integer",
    "Markdown", "Oid", "PositiveInt", "String", "Time", "UnsignedInt", "Uri", "Url", "Uuid", "Address", "Age",
    "Annotation", "Attachment", "CodeableConcept", "Coding", "ContactPoint", "Count", "Distance", "Duration",
    "HumanName", "Identifier", "Money", "Period", "Quantity", "Range", "Ratio", "Reference", "SampledData",
    "Signature", "Timing", "ContactDetail", "Contributor", "DataRequirement", "Expression", "ParameterDefinition",
    "RelatedArtifact", "TriggerDefinition", "UsageContext", "Dosage", "Meta",
];

// ------------------------------------------------------------------------------- parsing

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    Str(String),
    Num(f64),
    Sym(&'static str),
}

fn tokenize(text: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            tokens.push(Token::Ident(chars[start..i].iter().collect()));
        } else if c == '`' {
            let end = chars[i + 1..].iter().position(|&c| c == '`').ok_or("unclosed `")? + i + 1;
            tokens.push(Token::Ident(chars[i + 1..end].iter().collect()));
            i = end + 1;
        } else if c == '\'' {
            let mut s = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => return Err("unclosed string".into()),
                    Some('\'') => break,
                    Some('\\') => {
                        s.push(*chars.get(i + 1).ok_or("bad escape")?);
                        i += 2;
                    }
                    Some(&c) => {
                        s.push(c);
                        i += 1;
                    }
                }
            }
            i += 1;
            tokens.push(Token::Str(s));
        } else if c.is_ascii_digit() {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                i += 1;
            }
            let text: String = chars[start..i].iter().collect();
            tokens.push(Token::Num(text.parse().map_err(|_| format!("bad number {text}"))?));
        } else {
            let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
            let sym = match (two.as_str(), c) {
                ("!=", _) => "!=",
                (_, '.') => ".",
                (_, '(') => "(",
                (_, ')') => ")",
                (_, '[') => "[",
                (_, ']') => "]",
                (_, '|') => "|",
                (_, '=') => "=",
                (_, ',') => ",",
                _ => return Err(format!("'{c}' is outside the FHIRPath this server evaluates")),
            };
            i += sym.len();
            tokens.push(Token::Sym(sym));
        }
    }
    Ok(tokens)
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

/// Parses an expression; an error names what is outside the supported subset.
pub fn parse(text: &str) -> Result<Expr, String> {
    let mut parser = Parser { tokens: tokenize(text)?, pos: 0 };
    let expr = parser.or()?;
    if parser.pos != parser.tokens.len() {
        return Err(format!("unexpected {:?}", parser.tokens[parser.pos]));
    }
    Ok(expr)
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn eat_sym(&mut self, sym: &str) -> bool {
        if matches!(self.peek(), Some(Token::Sym(s)) if *s == sym) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn eat_word(&mut self, word: &str) -> bool {
        if matches!(self.peek(), Some(Token::Ident(s)) if s == word) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect_sym(&mut self, sym: &str) -> Result<(), String> {
        if self.eat_sym(sym) { Ok(()) } else { Err(format!("expected '{sym}'")) }
    }

    fn ident(&mut self) -> Result<String, String> {
        match self.tokens.get(self.pos) {
            Some(Token::Ident(s)) => {
                self.pos += 1;
                Ok(s.clone())
            }
            other => Err(format!("expected a name, found {other:?}")),
        }
    }

    fn or(&mut self) -> Result<Expr, String> {
        let mut left = self.and()?;
        while self.eat_word("or") {
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, String> {
        let mut left = self.equality()?;
        while self.eat_word("and") {
            left = Expr::And(Box::new(left), Box::new(self.equality()?));
        }
        Ok(left)
    }

    fn equality(&mut self) -> Result<Expr, String> {
        let left = self.union()?;
        for (sym, negate) in [("=", false), ("!=", true)] {
            if self.eat_sym(sym) {
                return Ok(Expr::Equals(Box::new(left), Box::new(self.union()?), negate));
            }
        }
        Ok(left)
    }

    fn union(&mut self) -> Result<Expr, String> {
        let mut left = self.typed()?;
        while self.eat_sym("|") {
            left = Expr::Union(Box::new(left), Box::new(self.typed()?));
        }
        Ok(left)
    }

    fn typed(&mut self) -> Result<Expr, String> {
        let left = self.postfix()?;
        if self.eat_word("is") {
            return Ok(Expr::Is(Box::new(left), self.ident()?));
        }
        if self.eat_word("as") {
            return Ok(Expr::As(Box::new(left), self.ident()?));
        }
        Ok(left)
    }

    fn postfix(&mut self) -> Result<Expr, String> {
        let mut expr = self.term()?;
        loop {
            if self.eat_sym(".") {
                let name = self.ident()?;
                expr = if self.eat_sym("(") { Expr::Call(Box::new(expr), self.function(&name)?) } else { Expr::Member(Box::new(expr), name) };
            } else if self.eat_sym("[") {
                let index = match self.tokens.get(self.pos) {
                    Some(Token::Num(n)) if n.fract() == 0.0 && *n >= 0.0 => *n as usize,
                    other => return Err(format!("expected an index, found {other:?}")),
                };
                self.pos += 1;
                self.expect_sym("]")?;
                expr = Expr::Index(Box::new(expr), index);
            } else {
                return Ok(expr);
            }
        }
    }

    fn term(&mut self) -> Result<Expr, String> {
        match self.tokens.get(self.pos).cloned() {
            Some(Token::Str(s)) => {
                self.pos += 1;
                Ok(Expr::Str(s))
            }
            Some(Token::Num(n)) => {
                self.pos += 1;
                Ok(Expr::Num(n))
            }
            Some(Token::Sym("(")) => {
                self.pos += 1;
                let inner = self.or()?;
                self.expect_sym(")")?;
                Ok(inner)
            }
            Some(Token::Ident(name)) => {
                self.pos += 1;
                match name.as_str() {
                    "true" => Ok(Expr::Bool(true)),
                    "false" => Ok(Expr::Bool(false)),
                    _ if self.eat_sym("(") => Ok(Expr::Call(Box::new(Expr::This), self.function(&name)?)),
                    _ => Ok(Expr::Name(name)),
                }
            }
            other => Err(format!("unexpected {other:?}")),
        }
    }

    /// A function call's arguments and closing parenthesis (the opening one is eaten).
    fn function(&mut self, name: &str) -> Result<Function, String> {
        let function = match name {
            "where" => Function::Where(Box::new(self.or()?)),
            "ofType" | "as" => Function::OfType(self.ident()?),
            "exists" => Function::Exists,
            "empty" => Function::Empty,
            "first" => Function::First,
            "not" => Function::Not,
            "resolve" => Function::Resolve,
            _ => return Err(format!("function {name}() is outside the FHIRPath this server evaluates")),
        };
        self.expect_sym(")")?;
        Ok(function)
    }
}

// ----------------------------------------------------------------------------- evaluation

/// Evaluates an expression on a resource of type `resource_type`.
pub fn evaluate<'a>(expr: &Expr, resource: &'a Value, resource_type: &ResourceType) -> Vec<Item<'a>> {
    let root = Item::node(resource, Some(resource_type.as_str()));
    eval(expr, &[root], resource_type, true)
}

fn eval<'a>(expr: &Expr, context: &[Item<'a>], root_type: &ResourceType, at_root: bool) -> Vec<Item<'a>> {
    match expr {
        Expr::This => context.to_vec(),
        Expr::Name(name) => {
            // A leading type name selects the resource when it is of that type (the branch of a
            // parameter shared by several types that applies to this one), and nothing otherwise.
            if at_root && (name == root_type.as_str() || name == "Resource" || name == "DomainResource") {
                context.to_vec()
            } else if at_root && name.starts_with(|c: char| c.is_ascii_uppercase()) {
                // Element names start in lower case, type names in upper case: another type's
                // branch (no table lookup: the `code` and `date` parameters have a dozen).
                Vec::new()
            } else {
                members(context, name)
            }
        }
        Expr::Member(target, name) => members(&eval(target, context, root_type, at_root), name),
        Expr::Index(target, index) => eval(target, context, root_type, at_root).into_iter().nth(*index).into_iter().collect(),
        Expr::Call(target, function) => call(function, eval(target, context, root_type, at_root), root_type),
        Expr::Str(s) => vec![Item { value: Cow::Owned(Value::String(s.clone())), ty: Some(Cow::Borrowed("string")) }],
        Expr::Bool(b) => vec![Item::boolean(*b)],
        Expr::Num(n) => vec![Item { value: Cow::Owned(serde_json::json!(n)), ty: Some(Cow::Borrowed("decimal")) }],
        Expr::Union(a, b) => {
            let mut out = eval(a, context, root_type, at_root);
            for item in eval(b, context, root_type, at_root) {
                if !out.iter().any(|o| o.value == item.value) {
                    out.push(item);
                }
            }
            out
        }
        Expr::Equals(a, b, negate) => {
            let (a, b) = (eval(a, context, root_type, at_root), eval(b, context, root_type, at_root));
            if a.is_empty() || b.is_empty() {
                return Vec::new();
            }
            let equal = a.len() == b.len() && a.iter().zip(&b).all(|(x, y)| x.value == y.value);
            vec![Item::boolean(equal != *negate)]
        }
        Expr::And(a, b) => {
            let both = truthy(&eval(a, context, root_type, at_root)) && truthy(&eval(b, context, root_type, at_root));
            vec![Item::boolean(both)]
        }
        Expr::Or(a, b) => {
            let either = truthy(&eval(a, context, root_type, at_root)) || truthy(&eval(b, context, root_type, at_root));
            vec![Item::boolean(either)]
        }
        Expr::Is(target, ty) => {
            let items = eval(target, context, root_type, at_root);
            match items.as_slice() {
                [item] => vec![Item::boolean(item.is_type(ty))],
                _ => Vec::new(),
            }
        }
        Expr::As(target, ty) => eval(target, context, root_type, at_root).into_iter().filter(|i| i.is_type(ty)).collect(),
    }
}

/// FHIRPath's boolean reading of a collection where one is expected: a single `true`. An empty
/// collection is "unknown", which `where` and `and` treat as not true.
fn truthy(items: &[Item]) -> bool {
    matches!(items, [item] if item.value.as_ref() == &Value::Bool(true))
}

fn call<'a>(function: &Function, input: Vec<Item<'a>>, root_type: &ResourceType) -> Vec<Item<'a>> {
    match function {
        Function::Where(criteria) => input
            .into_iter()
            .filter(|item| truthy(&eval(criteria, std::slice::from_ref(item), root_type, false)))
            .collect(),
        Function::OfType(ty) => input.into_iter().filter(|i| i.is_type(ty)).collect(),
        Function::Exists => vec![Item::boolean(!input.is_empty())],
        Function::Empty => vec![Item::boolean(input.is_empty())],
        Function::First => input.into_iter().take(1).collect(),
        Function::Not => match input.as_slice() {
            [item] => match item.value.as_ref() {
                Value::Bool(b) => vec![Item::boolean(!b)],
                _ => Vec::new(),
            },
            _ => Vec::new(),
        },
        Function::Resolve => input
            .iter()
            .filter_map(|item| item.value.get("reference").and_then(Value::as_str))
            .filter_map(referenced_type)
            .map(|ty| Item { value: Cow::Owned(Value::Null), ty: Some(Cow::Owned(ty.to_owned())) })
            .collect(),
    }
}

/// The resource type a literal reference names (`Patient/1`, `http://x/fhir/Patient/1`,
/// `Patient/1/_history/2`); None for `urn:` and `#contained` references.
pub fn referenced_type(reference: &str) -> Option<&str> {
    let path = reference.split("/_history/").next().unwrap_or(reference);
    let mut segments = path.rsplit('/');
    let _id = segments.next()?;
    let ty = segments.next()?;
    ResourceType::parse(ty).map(|t| t.as_str())
}

/// The children named `name` of each item, arrays flattened; a choice element is reached by its
/// base name, and its items carry the type its suffix names.
fn members<'a>(items: &[Item<'a>], name: &str) -> Vec<Item<'a>> {
    let mut out = Vec::new();
    for item in items {
        let Cow::Borrowed(Value::Object(map)) = &item.value else { continue };
        let mut push = |value: &'a Value, ty: Option<&'a str>| match value {
            Value::Array(values) => out.extend(values.iter().map(|v| Item::node(v, ty))),
            Value::Null => {}
            v => out.push(Item::node(v, ty)),
        };
        if let Some(value) = map.get(name) {
            push(value, None);
            continue;
        }
        for (key, value) in map.iter() {
            if let Some(suffix) = key.strip_prefix(name)
                && CHOICE_TYPES.contains(&suffix)
            {
                push(value, Some(suffix));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn values(expr: &str, resource: &Value) -> Vec<Value> {
        let t = ResourceType::parse(resource["resourceType"].as_str().unwrap()).unwrap();
        evaluate(&parse(expr).unwrap(), resource, &t).into_iter().map(|i| i.value.into_owned()).collect()
    }

    #[test]
    fn paths_unions_choices_and_where() {
        let obs = json!({"resourceType":"Observation","id":"o","code":{"text":"x"},
            "valueQuantity":{"value":3},"subject":{"reference":"Patient/p"},
            "performer":[{"reference":"Practitioner/a"},{"reference":"Patient/p2"}]});
        assert_eq!(values("Observation.code.text", &obs), vec![json!("x")]);
        assert_eq!(values("(Observation.value.ofType(Quantity)).value", &obs), vec![json!(3)]);
        assert!(values("Observation.value.ofType(string)", &obs).is_empty());
        assert_eq!(values("Observation.subject.where(resolve() is Patient) | Observation.performer.where(resolve() is Patient)", &obs),
            vec![json!({"reference":"Patient/p"}), json!({"reference":"Patient/p2"})]);
        assert!(values("Patient.name | Practitioner.name", &obs).is_empty());
        assert_eq!(values("Observation.performer[1].reference", &obs), vec![json!("Patient/p2")]);
        assert_eq!(values("Resource.id", &obs), vec![json!("o")]);
    }

    #[test]
    fn booleans_equality_and_exists() {
        let alive = json!({"resourceType":"Patient","deceasedBoolean":false});
        let dead = json!({"resourceType":"Patient","deceasedDateTime":"2020-01-01"});
        let expr = "Patient.deceased.exists() and Patient.deceased != false";
        assert_eq!(values(expr, &alive), vec![json!(false)]);
        assert_eq!(values(expr, &dead), vec![json!(true)]);
        let p = json!({"resourceType":"Patient","telecom":[{"system":"phone","value":"1"},{"system":"email","value":"a@b"}]});
        assert_eq!(values("Patient.telecom.where(system='email')", &p), vec![json!({"system":"email","value":"a@b"})]);
    }

    #[test]
    fn refuses_what_it_does_not_evaluate() {
        assert!(parse("Observation.code.memberOf('x')").is_err());
        assert!(parse("Observation.value + 1").is_err());
    }
}
