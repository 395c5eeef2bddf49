//! Text to `Expr`: a tokenizer and a precedence-climbing parser over FHIRPath's grammar, limited
//! to the operators and functions `Expr` and `Function` name.

use super::{Arith, Cmp, Expr, Function, ParseError};

type Result<T> = std::result::Result<T, ParseError>;

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    /// A backquoted name: never a keyword.
    Quoted(String),
    Str(String),
    Int(i64),
    Num(f64),
    Date(String, &'static str),
    This,
    Var(String),
    Sym(&'static str),
}

const SYMBOLS: [&str; 17] = ["!=", "<=", ">=", "!~", ".", "(", ")", "[", "]", "|", "=", ",", "<", ">", "+", "-", "&"];
const MORE_SYMBOLS: [&str; 3] = ["*", "/", "~"];

fn tokenize(text: &str) -> Result<Vec<Token>> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    let word_end = |mut i: usize| {
        while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
            i += 1;
        }
        i
    };
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c.is_ascii_alphabetic() || c == '_' {
            let end = word_end(i);
            tokens.push(Token::Ident(chars[i..end].iter().collect()));
            i = end;
        } else if c == '$' || c == '%' {
            let end = word_end(i + 1);
            let name: String = chars[i + 1..end].iter().collect();
            match (c, name.as_str()) {
                ('$', "this") => tokens.push(Token::This),
                ('%', "resource" | "rootResource" | "context") => tokens.push(Token::Var(name)),
                _ => return Err(ParseError::new(format!("the variable {c}{name} is outside the FHIRPath this server evaluates"))),
            }
            i = end;
        } else if c == '`' {
            let end = chars[i + 1..].iter().position(|&c| c == '`').ok_or(ParseError::new("unclosed `"))? + i + 1;
            tokens.push(Token::Quoted(chars[i + 1..end].iter().collect()));
            i = end + 1;
        } else if c == '\'' || c == '"' {
            let mut s = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => return Err(ParseError::new("unclosed string")),
                    Some(&q) if q == c => break,
                    Some('\\') => {
                        let escaped = *chars.get(i + 1).ok_or(ParseError::new("bad escape"))?;
                        s.push(match escaped {
                            'n' => '\n',
                            't' => '\t',
                            'r' => '\r',
                            other => other,
                        });
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
        } else if c == '@' {
            let start = i + 1;
            i = start;
            // A '.' belongs to the literal only before digits (fractional seconds), not before a call.
            let fraction = |i: usize| chars[i] == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit);
            while i < chars.len() && (chars[i].is_ascii_digit() || matches!(chars[i], '-' | ':' | 'T' | 'Z' | '+') || fraction(i)) {
                i += 1;
            }
            let text: String = chars[start..i].iter().collect();
            let ty = if text.starts_with('T') {
                "time"
            } else if text.contains('T') {
                "dateTime"
            } else {
                "date"
            };
            if !text.trim_start_matches('T').starts_with(|c: char| c.is_ascii_digit()) {
                return Err(ParseError::new(format!("bad date literal @{text}")));
            }
            tokens.push(Token::Date(text.trim_start_matches('T').to_owned(), ty));
        } else if c.is_ascii_digit() {
            let start = i;
            while i < chars.len() && chars[i].is_ascii_digit() {
                i += 1;
            }
            let decimal = chars.get(i) == Some(&'.') && chars.get(i + 1).is_some_and(char::is_ascii_digit);
            if decimal {
                i += 1;
                while i < chars.len() && chars[i].is_ascii_digit() {
                    i += 1;
                }
            }
            let text: String = chars[start..i].iter().collect();
            let bad = || ParseError::new(format!("bad number {text}"));
            tokens.push(if decimal { Token::Num(text.parse().map_err(|_| bad())?) } else { Token::Int(text.parse().map_err(|_| bad())?) });
        } else {
            let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
            let sym = SYMBOLS
                .iter()
                .chain(&MORE_SYMBOLS)
                .find(|s| if s.len() == 2 { two == **s } else { s.starts_with(c) })
                .ok_or_else(|| ParseError::new(format!("'{c}' is outside the FHIRPath this server evaluates")))?;
            i += sym.chars().count();
            tokens.push(Token::Sym(sym));
        }
    }
    Ok(tokens)
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
    depth: usize,
}

/// Nesting deeper than this is refused rather than risking the stack.
const MAX_DEPTH: usize = 64;

/// Parses an expression; an error names what is outside the supported subset.
pub fn parse(text: &str) -> Result<Expr> {
    let mut parser = Parser { tokens: tokenize(text)?, pos: 0, depth: 0 };
    let expr = parser.expression()?;
    if parser.pos != parser.tokens.len() {
        return Err(ParseError::new(format!("unexpected {}", describe(&parser.tokens[parser.pos]))));
    }
    Ok(expr)
}

fn describe(token: &Token) -> String {
    match token {
        Token::Ident(s) | Token::Quoted(s) => format!("'{s}'"),
        Token::Str(s) => format!("string '{s}'"),
        Token::Int(n) => n.to_string(),
        Token::Num(n) => n.to_string(),
        Token::Date(d, _) => format!("@{d}"),
        Token::This => "$this".into(),
        Token::Var(v) => format!("%{v}"),
        Token::Sym(s) => format!("'{s}'"),
    }
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

    fn expect_sym(&mut self, sym: &str) -> Result<()> {
        if self.eat_sym(sym) {
            Ok(())
        } else {
            Err(ParseError::new(match self.peek() {
                Some(t) => format!("expected '{sym}', found {}", describe(t)),
                None => format!("expected '{sym}' at the end"),
            }))
        }
    }

    fn ident(&mut self) -> Result<String> {
        match self.tokens.get(self.pos) {
            Some(Token::Ident(s) | Token::Quoted(s)) => {
                self.pos += 1;
                Ok(s.clone())
            }
            Some(other) => Err(ParseError::new(format!("expected a name, found {}", describe(other)))),
            None => Err(ParseError::new("expected a name at the end")),
        }
    }

    /// A type specifier: `Quantity`, `FHIR.Quantity`, `System.String` (the namespace dropped).
    fn type_name(&mut self) -> Result<String> {
        let first = self.ident()?;
        if matches!(first.as_str(), "FHIR" | "System") && self.eat_sym(".") {
            return self.ident();
        }
        Ok(first)
    }

    fn expression(&mut self) -> Result<Expr> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(ParseError::new("the expression nests too deeply"));
        }
        let result = self.implies();
        self.depth -= 1;
        result
    }

    fn implies(&mut self) -> Result<Expr> {
        let mut left = self.or()?;
        while self.eat_word("implies") {
            left = Expr::Implies(Box::new(left), Box::new(self.or()?));
        }
        Ok(left)
    }

    fn or(&mut self) -> Result<Expr> {
        let mut left = self.and()?;
        loop {
            if self.eat_word("or") {
                left = Expr::Or(Box::new(left), Box::new(self.and()?));
            } else if self.eat_word("xor") {
                left = Expr::Xor(Box::new(left), Box::new(self.and()?));
            } else {
                return Ok(left);
            }
        }
    }

    fn and(&mut self) -> Result<Expr> {
        let mut left = self.membership()?;
        while self.eat_word("and") {
            left = Expr::And(Box::new(left), Box::new(self.membership()?));
        }
        Ok(left)
    }

    fn membership(&mut self) -> Result<Expr> {
        let mut left = self.equality()?;
        loop {
            if self.eat_word("in") {
                left = Expr::In(Box::new(left), Box::new(self.equality()?));
            } else if self.eat_word("contains") {
                left = Expr::In(Box::new(self.equality()?), Box::new(left));
            } else {
                return Ok(left);
            }
        }
    }

    fn equality(&mut self) -> Result<Expr> {
        let mut left = self.comparison()?;
        loop {
            let negate = if self.eat_sym("=") || self.eat_sym("~") {
                false
            } else if self.eat_sym("!=") || self.eat_sym("!~") {
                true
            } else {
                return Ok(left);
            };
            left = Expr::Equals(Box::new(left), Box::new(self.comparison()?), negate);
        }
    }

    fn comparison(&mut self) -> Result<Expr> {
        let mut left = self.union()?;
        loop {
            let op = [("<=", Cmp::Le), (">=", Cmp::Ge), ("<", Cmp::Lt), (">", Cmp::Gt)].into_iter().find(|(s, _)| self.eat_sym(s));
            let Some((_, op)) = op else { return Ok(left) };
            left = Expr::Compare(Box::new(left), op, Box::new(self.union()?));
        }
    }

    fn union(&mut self) -> Result<Expr> {
        let mut left = self.typed()?;
        while self.eat_sym("|") {
            left = Expr::Union(Box::new(left), Box::new(self.typed()?));
        }
        Ok(left)
    }

    fn typed(&mut self) -> Result<Expr> {
        let mut left = self.additive()?;
        loop {
            if self.eat_word("is") {
                left = Expr::Is(Box::new(left), self.type_name()?);
            } else if self.eat_word("as") {
                left = Expr::As(Box::new(left), self.type_name()?);
            } else {
                return Ok(left);
            }
        }
    }

    fn additive(&mut self) -> Result<Expr> {
        let mut left = self.multiplicative()?;
        loop {
            let op = [("+", Arith::Add), ("-", Arith::Sub), ("&", Arith::Concat)].into_iter().find(|(s, _)| self.eat_sym(s));
            let Some((_, op)) = op else { return Ok(left) };
            left = Expr::Arith(Box::new(left), op, Box::new(self.multiplicative()?));
        }
    }

    fn multiplicative(&mut self) -> Result<Expr> {
        let mut left = self.unary()?;
        loop {
            let op = if self.eat_sym("*") {
                Arith::Mul
            } else if self.eat_sym("/") {
                Arith::Div
            } else if self.eat_word("div") {
                Arith::IntDiv
            } else if self.eat_word("mod") {
                Arith::Mod
            } else {
                return Ok(left);
            };
            left = Expr::Arith(Box::new(left), op, Box::new(self.unary()?));
        }
    }

    fn unary(&mut self) -> Result<Expr> {
        if self.eat_sym("-") {
            return Ok(Expr::Negate(Box::new(self.unary()?)));
        }
        if self.eat_sym("+") {
            return self.unary();
        }
        self.postfix()
    }

    fn postfix(&mut self) -> Result<Expr> {
        let mut expr = self.term()?;
        loop {
            if self.eat_sym(".") {
                let name = self.ident()?;
                expr = if self.eat_sym("(") { Expr::Call(Box::new(expr), self.function(&name)?) } else { Expr::Member(Box::new(expr), name) };
            } else if self.eat_sym("[") {
                let index = match self.tokens.get(self.pos) {
                    Some(Token::Int(n)) if *n >= 0 => *n as usize,
                    Some(other) => return Err(ParseError::new(format!("expected an index, found {}", describe(other)))),
                    None => return Err(ParseError::new("expected an index at the end")),
                };
                self.pos += 1;
                self.expect_sym("]")?;
                expr = Expr::Index(Box::new(expr), index);
            } else {
                return Ok(expr);
            }
        }
    }

    fn term(&mut self) -> Result<Expr> {
        let Some(token) = self.tokens.get(self.pos).cloned() else {
            return Err(ParseError::new("the expression ends too early"));
        };
        self.pos += 1;
        match token {
            Token::Str(s) => Ok(Expr::Str(s)),
            Token::Int(n) => Ok(Expr::Int(n)),
            Token::Num(n) => Ok(Expr::Num(n)),
            Token::Date(d, ty) => Ok(Expr::Date(d, ty)),
            Token::This => Ok(Expr::This),
            Token::Var(_) => Ok(Expr::Resource),
            Token::Sym("(") => {
                let inner = self.expression()?;
                self.expect_sym(")")?;
                Ok(inner)
            }
            Token::Quoted(name) => Ok(Expr::Name(name)),
            Token::Ident(name) => match name.as_str() {
                "true" => Ok(Expr::Bool(true)),
                "false" => Ok(Expr::Bool(false)),
                _ if self.eat_sym("(") => Ok(Expr::Call(Box::new(Expr::This), self.function(&name)?)),
                _ => Ok(Expr::Name(name)),
            },
            other => Err(ParseError::new(format!("unexpected {}", describe(&other)))),
        }
    }

    /// A function call's arguments and closing parenthesis (the opening one is eaten).
    fn function(&mut self, name: &str) -> Result<Function> {
        // Type arguments are names, not expressions.
        if matches!(name, "ofType" | "as" | "is") {
            let ty = self.type_name()?;
            self.expect_sym(")")?;
            return Ok(if name == "is" { Function::IsType(ty) } else { Function::OfType(ty) });
        }
        let mut args = Vec::new();
        if !self.eat_sym(")") {
            loop {
                args.push(Box::new(self.expression()?));
                if self.eat_sym(")") {
                    break;
                }
                self.expect_sym(",")?;
            }
        }
        let arity = args.len();
        let mut args = args.into_iter();
        let mut next = || args.next().expect("arity checked");
        let string_arg = |arg: Box<Expr>| match *arg {
            Expr::Str(s) => Ok(s),
            _ => Err(ParseError::new(format!("{name}() takes a string literal"))),
        };
        let function = match (name, arity) {
            ("where", 1) => Function::Where(next()),
            ("select", 1) => Function::Select(next()),
            ("all", 1) => Function::All(next()),
            ("exists", 0) => Function::Exists(None),
            ("exists", 1) => Function::Exists(Some(next())),
            ("empty", 0) => Function::Empty,
            ("hasValue", 0) => Function::HasValue,
            ("first", 0) => Function::First,
            ("last", 0) => Function::Last,
            ("tail", 0) => Function::Tail,
            ("single", 0) => Function::Single,
            ("count", 0) => Function::Count,
            ("distinct", 0) => Function::Distinct,
            ("not", 0) => Function::Not,
            ("resolve", 0) => Function::Resolve,
            ("nodesByType", 1) => Function::NodesByType(string_arg(next())?),
            ("nodesByName", 1) => Function::NodesByName(string_arg(next())?),
            ("children", 0) => Function::Children,
            ("descendants", 0) => Function::Descendants,
            ("extension", 1) => Function::Extension(next()),
            ("startsWith", 1) => Function::StartsWith(next()),
            ("endsWith", 1) => Function::EndsWith(next()),
            ("contains", 1) => Function::Contains(next()),
            ("matches", 1) => Function::Matches(next()),
            ("replaceMatches", 2) => Function::ReplaceMatches(next(), next()),
            ("replace", 2) => Function::Replace(next(), next()),
            ("indexOf", 1) => Function::IndexOf(next()),
            ("substring", 1) => Function::Substring(next(), None),
            ("substring", 2) => Function::Substring(next(), Some(next())),
            ("length", 0) => Function::Length,
            ("upper", 0) => Function::Upper,
            ("lower", 0) => Function::Lower,
            ("trim", 0) => Function::Trim,
            ("toString", 0) => Function::ToString,
            ("iif", 2) => Function::Iif(next(), next(), None),
            ("iif", 3) => Function::Iif(next(), next(), Some(next())),
            _ => return Err(ParseError::new(format!("function {name}() with {arity} argument(s) is outside the FHIRPath this server evaluates"))),
        };
        Ok(function)
    }
}
