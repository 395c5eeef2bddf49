//! The search side's tree: plain JSON, where an item knows its type only when the path tells
//! it (a choice element's suffix, or what `resolve()` found).

use std::{borrow::Cow, marker::PhantomData};

use serde_json::Value;

use super::{eval_on, Env, Expr, Tree};
use crate::fhir::ResourceType;

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

/// Evaluates an expression on a resource of type `resource_type`.
pub fn evaluate<'a>(expr: &Expr, resource: &'a Value, resource_type: &ResourceType) -> Vec<Item<'a>> {
    let root = Item::node(resource, Some(resource_type.as_str()));
    let env = Env { tree: &JsonTree(PhantomData), resource: root.clone(), resource_type: resource_type.as_str(), mismatch: None };
    eval_on(expr, &env, &[root])
}

struct JsonTree<'a>(PhantomData<&'a ()>);

impl<'a> Tree for JsonTree<'a> {
    type Item = Item<'a>;

    fn literal(&self, value: Value, ty: &'static str) -> Item<'a> {
        Item { value: Cow::Owned(value), ty: Some(Cow::Borrowed(ty)) }
    }

    fn value<'s>(&'s self, item: &'s Item<'a>) -> Option<&'s Value> {
        Some(item.value.as_ref())
    }

    fn type_name<'s>(&'s self, item: &'s Item<'a>) -> Option<&'s str> {
        item.ty.as_deref()
    }

    fn name<'s>(&'s self, _item: &'s Item<'a>) -> Option<&'s str> {
        None
    }

    fn members(&self, item: &Item<'a>, name: &str, out: &mut Vec<Item<'a>>) {
        members(item, name, out);
    }

    fn children(&self, item: &Item<'a>, out: &mut Vec<Item<'a>>) {
        let Cow::Borrowed(Value::Object(map)) = &item.value else { return };
        for (key, value) in map.iter().filter(|(k, _)| k.as_str() != "resourceType") {
            let ty = choice_suffix(key);
            match value {
                Value::Array(values) => out.extend(values.iter().map(|v| Item::node(v, ty))),
                Value::Null => {}
                v => out.push(Item::node(v, ty)),
            }
        }
    }

    fn is_resource(&self, item: &Item<'a>) -> bool {
        item.value.get("resourceType").is_some()
    }

    fn same(&self, a: &Item<'a>, b: &Item<'a>) -> bool {
        a.value == b.value
    }

    fn resolve(&self, item: &Item<'a>) -> Option<Item<'a>> {
        let ty = referenced_type(item.value.get("reference")?.as_str()?)?;
        Some(Item { value: Cow::Owned(Value::Null), ty: Some(Cow::Owned(ty.to_owned())) })
    }
}

/// The type a JSON name's choice suffix names (`valueQuantity`: Quantity), if any.
fn choice_suffix(key: &str) -> Option<&'static str> {
    let start = key.find(|c: char| c.is_ascii_uppercase())?;
    CHOICE_TYPES.iter().find(|t| **t == &key[start..]).copied()
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
fn members<'a>(item: &Item<'a>, name: &str, out: &mut Vec<Item<'a>>) {
    {
        let Cow::Borrowed(Value::Object(map)) = &item.value else { return };
        let mut push = |value: &'a Value, ty: Option<&'a str>| match value {
            Value::Array(values) => out.extend(values.iter().map(|v| Item::node(v, ty))),
            Value::Null => {}
            v => out.push(Item::node(v, ty)),
        };
        if let Some(value) = map.get(name) {
            push(value, None);
            return;
        }
        for (key, value) in map.iter() {
            if let Some(suffix) = key.strip_prefix(name)
                && CHOICE_TYPES.contains(&suffix)
            {
                push(value, Some(suffix));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fhir::fhirpath::parse;
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
    fn comparisons_strings_arithmetic_and_membership() {
        let p = json!({"resourceType":"Patient","id":"p1","birthDate":"1995-03-04","gender":"female",
            "name":[{"family":"Chalmers","given":["Peter","James"]}],
            "extension":[{"url":"http://a","valueString":"x"},{"url":"http://b","valueInteger":3}]});
        assert_eq!(values("Patient.birthDate <= @2020-01-01 and Patient.birthDate >= @1990-01-01", &p), vec![json!(true)]);
        assert_eq!(values("Patient.birthDate > @2020-01-01", &p), vec![json!(false)]);
        assert_eq!(values("Patient.birthDate > @1995", &p), Vec::<Value>::new());
        assert_eq!(values("Patient.gender in ('male' | 'female')", &p), vec![json!(true)]);
        assert_eq!(values("('es-AR' | 'es-ES') contains Patient.gender", &p), vec![json!(false)]);
        assert_eq!(values("Patient.name.family.substring(0,3) + '****'", &p), vec![json!("Cha****")]);
        assert_eq!(values("Patient.name.family.startsWith('Cha') and Patient.name.family.contains('lm')", &p), vec![json!(true)]);
        assert_eq!(values("Patient.name.family.matches('^C[a-z]+s$')", &p), vec![json!(true)]);
        assert_eq!(values("Patient.name.given.count() + 1", &p), vec![json!(3)]);
        assert_eq!(values("Patient.name.given.last().upper()", &p), vec![json!("JAMES")]);
        assert_eq!(values("Patient.extension('http://b').value", &p), vec![json!(3)]);
        assert_eq!(values("Patient.extension.exists(url = 'http://a')", &p), vec![json!(true)]);
        assert_eq!(values("Patient.where(id.exists()).id", &p), vec![json!("p1")]);
        assert_eq!(values("%resource.id & '-' & Patient.nothing", &p), vec![json!("p1-")]);
        // Plain JSON knows no types but a choice's suffix: the typed tree of `anonymize` does.
        assert_eq!(values("Patient.birthDate is date", &p), vec![json!(false)]);
        assert_eq!(values("-2 < 1 xor 1 > 2", &p), vec![json!(true)]);
        assert_eq!(values("(43 div 10 - 1) * 10", &p), vec![json!(30)]);
        assert_eq!(values("5 / 2", &p), vec![json!(2.5)]);
        assert_eq!(values("7 mod 3", &p), vec![json!(1)]);
        assert_eq!(values("Patient.name.descendants().count()", &p), vec![json!(3)]);
        assert_eq!(values("iif(gender = 'female', 'f', 'm')", &p), vec![json!("f")]);
    }

    #[test]
    fn refuses_what_it_does_not_evaluate() {
        assert!(parse("Observation.code.memberOf('x')").is_err());
        assert!(parse("Observation.value.memberOf('x')").is_err());
        assert!(parse("$index").is_err());
        assert!(parse("Observation.nodesByType(code)").is_err());
        assert!(parse("$this>=0 && $this<10").is_err());
        assert!(parse("invalid()").is_err());
    }
}
