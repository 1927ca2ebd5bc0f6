//! Admission-equivalent validation of custom-resource documents.
//!
//! `roster apply -f` reads manifests that never pass through an API server, so it has to be as
//! strict as one: a real API server behind `kubectl apply` (strict field validation, the
//! default) would refuse the same documents with the same field paths. This module does what
//! the apiextensions API server does with a create or update of a custom resource:
//!
//! 1. the object is put into its admitted form ([`apply_defaults`]): `null` in a field that is
//!    not `nullable` and has no `default` is dropped, `default`s are filled in;
//! 2. the structural schema checks run and report every failure, not just the first: unknown
//!    fields, `type`, `nullable`, `enum`, `required`, `pattern`, `minLength`/`maxLength`
//!    (Unicode code points), `minItems`/`maxItems`, `minProperties`/`maxProperties`,
//!    `minimum`/`maximum` (and their `exclusive…` flags), `format` (`date-time`; `int32`/`int64`
//!    ranges), `additionalProperties` maps, `x-kubernetes-list-type` `set`/`map` duplicates,
//!    `x-kubernetes-preserve-unknown-fields`, `x-kubernetes-int-or-string`;
//! 3. the CEL rules (`x-kubernetes-validations`) run, through kube's CEL engine — unless step 2
//!    found a *blocking* error (wrong type, unknown field, missing required field, value not in
//!    the enum, too long, too many), in which case the API server skips them and says so with a
//!    field-less error, which is reproduced here.
//!
//! In `metadata`, `name` must be a DNS-1123 subdomain and `namespace` a DNS-1123 label, as the
//! API server requires of custom resources (nothing else in it is checked); in
//! [`validate_object`], `status` is ignored, as the API server ignores it on writes to a
//! resource with a status subresource. `allOf`/`anyOf`/`oneOf`/`not` and
//! `multipleOf` are not evaluated (no Roster CRD uses them).

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::rc::Rc;
use std::sync::{Arc, Mutex, OnceLock};

use kube::core::cel::{CompiledSchema, ErrorKind, ValidationError, Validator, compile_schema};
use regex::Regex;
use serde_json::{Map, Number, Value};

/// One refused field, in the API server's terms (`k8s.io/apimachinery`'s `field.Error`).
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    /// The field in the API server's notation: `spec.projects[2]`, `spec.mapping[givenName]`;
    /// empty for an error about the whole object.
    pub field: String,
    /// What is wrong.
    pub kind: FieldErrorKind,
    /// The offending value as the API server quotes it: the value itself; for a wrong type or a
    /// failed CEL rule the schema type name (`"string"`, `"object"`); for too many items the
    /// count. `None` where the API server shows none.
    pub value: Option<Value>,
    /// The detail after the value, e.g. `username is reserved for a system account` or
    /// `spec.loginShell in body should match '^/…$'`; may be empty.
    pub message: String,
}

/// The kind of a [`FieldError`], mirroring the API server's `field.ErrorType`s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FieldErrorKind {
    /// A required field is missing (`Required value`).
    Required,
    /// The value breaks a rule: pattern, bounds, min length, a CEL rule (`Invalid value`).
    Invalid,
    /// The value is not one of the enum's (`Unsupported value`).
    NotSupported,
    /// A string longer than `maxLength` (`Too long`).
    TooLong,
    /// More items or properties than `maxItems`/`maxProperties` (`Too many`).
    TooMany,
    /// A field the schema does not declare (strict field validation; `Unknown field`).
    Unknown,
    /// The value has the wrong JSON type or string format (`Invalid value`, like the API
    /// server's `FieldValueTypeInvalid`).
    TypeMismatch,
    /// A CEL rule with `reason: FieldValueForbidden` failed (`Forbidden`).
    Forbidden,
    /// Two items of an `x-kubernetes-list-type: set`/`map` list collide (`Duplicate value`).
    Duplicate,
}

impl FieldErrorKind {
    /// The `metav1.StatusCause` type the API server reports for this kind. Unknown fields are
    /// not a cause: the API server refuses them while decoding (400 "strict decoding error").
    pub fn cause_type(self) -> Option<&'static str> {
        Some(match self {
            Self::Required => "FieldValueRequired",
            Self::Invalid => "FieldValueInvalid",
            Self::NotSupported => "FieldValueNotSupported",
            Self::TooLong => "FieldValueTooLong",
            Self::TooMany => "FieldValueTooMany",
            Self::TypeMismatch => "FieldValueTypeInvalid",
            Self::Forbidden => "FieldValueForbidden",
            Self::Duplicate => "FieldValueDuplicate",
            Self::Unknown => return None,
        })
    }

    /// Whether the API server skips the CEL rules when a structural error of this kind exists.
    fn blocks_cel(self) -> bool {
        matches!(
            self,
            Self::Required
                | Self::NotSupported
                | Self::TooLong
                | Self::TooMany
                | Self::TypeMismatch
                | Self::Unknown
        )
    }
}

impl FieldError {
    /// A field error from its parts.
    pub fn new(
        field: impl Into<String>,
        kind: FieldErrorKind,
        value: Option<Value>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            field: field.into(),
            kind,
            value,
            message: message.into(),
        }
    }
}

/// The message of the field-less error the API server adds when it skipped the CEL rules.
pub const CEL_SKIPPED: &str = "some validation rules were not checked because the object was \
                               invalid; correct the existing errors to complete validation";

impl fmt::Display for FieldError {
    /// Formats like the API server: `spec.username: Invalid value: "string": username is
    /// reserved for a system account`, `spec.person: Required value`, `spec.foo: Unknown field`.
    /// An error about the whole object has no field prefix (the API server prints `<nil>`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        let (label, shows_value) = match self.kind {
            FieldErrorKind::Required => ("Required value", false),
            FieldErrorKind::Forbidden => ("Forbidden", false),
            FieldErrorKind::TooLong => ("Too long", false),
            FieldErrorKind::Unknown => ("Unknown field", false),
            FieldErrorKind::Invalid | FieldErrorKind::TypeMismatch => ("Invalid value", true),
            FieldErrorKind::NotSupported => ("Unsupported value", true),
            FieldErrorKind::TooMany => ("Too many", true),
            FieldErrorKind::Duplicate => ("Duplicate value", true),
        };
        f.write_str(label)?;
        if shows_value && let Some(value) = &self.value {
            write!(f, ": {}", render_value(value))?;
        }
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for FieldError {}

/// A value as the API server's messages quote it: strings in Go's `%q` form, the rest as JSON.
fn render_value(value: &Value) -> String {
    match value {
        Value::String(s) => go_quote(s),
        other => other.to_string(),
    }
}

/// Go's `strconv.Quote`: control characters escaped, printable text (umlauts too) kept.
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

// ---------------------------------------------------------------------------------------------
// Entry points
// ---------------------------------------------------------------------------------------------

/// One served version of a Roster CRD, as the validator needs it.
struct CrdVersion {
    name: String,
    schema: Value,
    /// `schema` without the rules [`check_native_rules`] evaluates, for kube's CEL engine.
    cel_schema: Value,
    status_subresource: bool,
}

struct CrdSchemas {
    kind: String,
    group: String,
    versions: Vec<CrdVersion>,
}

/// The schemas of [`crate::api::crds`], built once.
fn roster_schemas() -> &'static [CrdSchemas] {
    static SCHEMAS: OnceLock<Vec<CrdSchemas>> = OnceLock::new();
    SCHEMAS.get_or_init(|| {
        super::crds()
            .into_iter()
            .map(|crd| CrdSchemas {
                kind: crd.spec.names.kind.clone(),
                group: crd.spec.group.clone(),
                versions: crd
                    .spec
                    .versions
                    .iter()
                    .filter(|v| v.served)
                    .filter_map(|v| {
                        let schema = v.schema.as_ref()?.open_api_v3_schema.as_ref()?;
                        let schema = serde_json::to_value(schema).ok()?;
                        Some(CrdVersion {
                            name: v.name.clone(),
                            cel_schema: without_native_rules(&schema),
                            schema,
                            status_subresource: v
                                .subresources
                                .as_ref()
                                .is_some_and(|s| s.status.is_some()),
                        })
                    })
                    .collect(),
            })
            .collect()
    })
}

/// Validates `object` (a whole resource as JSON: apiVersion, kind, metadata, spec, status)
/// against the openAPIV3Schema of its CRD from [`crate::api::crds`] (selected by `kind` and
/// `apiVersion`), including the CEL rules; `old` is the stored object for transition rules on
/// update (file mode passes `None`). `status` is ignored (the CRDs have a status subresource).
pub fn validate_object(object: &Value, old: Option<&Value>) -> Result<(), Vec<FieldError>> {
    let Some(fields) = object.as_object() else {
        return Err(vec![type_mismatch("", "object", object)]);
    };
    let schemas = roster_schemas();
    let kind = match fields.get("kind") {
        None | Some(Value::Null) => {
            return Err(vec![FieldError::new(
                "kind",
                FieldErrorKind::Required,
                None,
                "",
            )]);
        }
        Some(Value::String(kind)) => kind,
        Some(other) => return Err(vec![type_mismatch("kind", "string", other)]),
    };
    let Some(crd) = schemas.iter().find(|c| &c.kind == kind) else {
        let supported: Vec<Value> = schemas
            .iter()
            .map(|c| Value::from(c.kind.clone()))
            .collect();
        return Err(vec![not_supported(
            "kind",
            object["kind"].clone(),
            &supported,
        )]);
    };
    let supported: Vec<Value> = crd
        .versions
        .iter()
        .map(|v| Value::from(format!("{}/{}", crd.group, v.name)))
        .collect();
    let version = match fields.get("apiVersion") {
        None | Some(Value::Null) => {
            return Err(vec![FieldError::new(
                "apiVersion",
                FieldErrorKind::Required,
                None,
                "",
            )]);
        }
        Some(Value::String(api_version)) => crd
            .versions
            .iter()
            .find(|v| api_version.split_once('/') == Some((&crd.group, &v.name))),
        Some(other) => return Err(vec![type_mismatch("apiVersion", "string", other)]),
    };
    let Some(version) = version else {
        return Err(vec![not_supported(
            "apiVersion",
            object["apiVersion"].clone(),
            &supported,
        )]);
    };

    let without_status = |o: &Value| {
        let mut o = o.clone();
        if version.status_subresource
            && let Some(fields) = o.as_object_mut()
        {
            fields.remove("status");
        }
        o
    };
    let object = without_status(object);
    let old = old.map(without_status);
    let errors = with_compiled(&version.cel_schema, |compiled| {
        validate_with(&version.schema, Some(compiled), &object, old.as_ref())
    });
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// [`validate_object`] of a typed resource Roster built itself (an import's Person or
/// Account): `Err` is every refused field, joined as the API server would print them, so such an
/// object is refused as a `kubectl apply` of it would be.
pub fn validate_typed<K: serde::Serialize>(object: &K) -> Result<(), String> {
    let value = serde_json::to_value(object).map_err(|e| e.to_string())?;
    validate_object(&value, None).map_err(|errors| {
        errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    })
}

/// Validates `object` against an explicit openAPIV3Schema (any CRD's): the structural checks,
/// then — when none of them is blocking, as the API server does — the CEL rules, with `old`
/// for transition rules. Returns every error found; empty means admitted. The root is treated
/// as a resource: `apiVersion` and `kind` must be strings, `metadata` an object.
pub fn validate_against(schema: &Value, object: &Value, old: Option<&Value>) -> Vec<FieldError> {
    validate_with(schema, None, object, old)
}

/// [`validate_against`], with the schema's CEL rules already compiled when `compiled` is given:
/// then `compiled` holds all but the rules of `schema` that [`check_native_rules`] evaluates.
fn validate_with(
    schema: &Value,
    compiled: Option<&CompiledSchema>,
    object: &Value,
    old: Option<&Value>,
) -> Vec<FieldError> {
    let admitted = apply_defaults(schema, object);
    let mut errors = vec![];
    check(schema, &admitted, "", true, &mut errors);
    if errors.iter().any(|e| e.kind.blocks_cel()) {
        errors.push(FieldError::new(
            "",
            FieldErrorKind::Invalid,
            Some(Value::Null),
            CEL_SKIPPED,
        ));
        return errors;
    }
    if compiled.is_some() {
        check_native_rules(schema, &admitted, "", &mut errors);
    }
    let old = old.map(|o| apply_defaults(schema, o));
    thread_local! {
        // Registering the Kubernetes CEL library takes a while; once per thread is enough.
        static CEL: Validator = Validator::new();
    }
    let outcome = CEL.with(|cel| match compiled {
        Some(compiled) => cel.validate_compiled(compiled, &admitted, old.as_ref()),
        None => cel.validate(schema, &admitted, old.as_ref()),
    });
    if let Err(failures) = outcome {
        errors.extend(failures.iter().map(|e| cel_error(schema, &admitted, e)));
    }
    errors
}

/// The CEL rules of one of [`roster_schemas`], compiled once per thread.
fn with_compiled<T>(schema: &'static Value, f: impl FnOnce(&CompiledSchema) -> T) -> T {
    thread_local! {
        static COMPILED: RefCell<HashMap<usize, Rc<CompiledSchema>>> = RefCell::default();
    }
    // The schemas live in a static, so their address identifies them.
    let key = std::ptr::from_ref(schema) as usize;
    let compiled = COMPILED.with(|cache| {
        Rc::clone(
            cache
                .borrow_mut()
                .entry(key)
                .or_insert_with(|| Rc::new(compile_schema(schema))),
        )
    });
    f(&compiled)
}

/// The object as the API server admits it before validating: a `null` in a field that is not
/// `nullable` is dropped, or replaced by the field's `default` if it has one; missing fields
/// with a `default` get it (recursively, also inside values just defaulted). Unknown fields are
/// kept (they are errors here, not pruned).
pub fn apply_defaults(schema: &Value, object: &Value) -> Value {
    let mut object = object.clone();
    default_in_place(schema, &mut object);
    object
}

fn default_in_place(schema: &Value, value: &mut Value) {
    match value {
        Value::Object(fields) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            // Non-nullable nulls: defaulted below if there is a default, else dropped.
            fields.retain(|key, v| {
                let sub = props.and_then(|p| p.get(key)).or(additional);
                !(v.is_null() && sub.is_some_and(|s| !is_nullable(s) && s.get("default").is_none()))
            });
            if let Some(props) = props {
                for (key, prop) in props {
                    let Some(default) = prop.get("default") else {
                        continue;
                    };
                    let missing = match fields.get(key) {
                        None => true,
                        Some(v) => v.is_null() && !is_nullable(prop),
                    };
                    if missing {
                        fields.insert(key.clone(), default.clone());
                    }
                }
            }
            for (key, v) in fields.iter_mut() {
                if let Some(sub) = props.and_then(|p| p.get(key)).or(additional) {
                    default_in_place(sub, v);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for item in items {
                    default_in_place(item_schema, item);
                }
            }
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------------
// Structural checks
// ---------------------------------------------------------------------------------------------

fn is_nullable(schema: &Value) -> bool {
    schema.get("nullable").and_then(Value::as_bool) == Some(true)
}

fn flag(schema: &Value, key: &str) -> bool {
    schema.get(key).and_then(Value::as_bool) == Some(true)
}

fn child_path(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// `path in body`, the subject of kube-openapi's messages.
fn in_body(path: &str) -> String {
    if path.is_empty() {
        "body".to_owned()
    } else {
        format!("{path} in body")
    }
}

/// The JSON type of a value in OpenAPI's words (whole numbers are `integer`).
fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if is_integer(n) => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Whole numbers are integers, also when written `1.0` (within the ±2^53 JSON keeps exact).
fn is_integer(n: &Number) -> bool {
    const MAX_EXACT: f64 = 9_007_199_254_740_992.0;
    n.is_i64()
        || n.is_u64()
        || n.as_f64()
            .is_some_and(|f| f.fract() == 0.0 && f.abs() <= MAX_EXACT)
}

fn type_mismatch(path: &str, expected: &str, value: &Value) -> FieldError {
    let actual = type_name(value);
    FieldError::new(
        path,
        FieldErrorKind::TypeMismatch,
        Some(Value::from(actual)),
        format!(
            "{} must be of type {expected}: {}",
            in_body(path),
            go_quote(actual)
        ),
    )
}

fn not_supported(path: &str, value: Value, supported: &[Value]) -> FieldError {
    let list: Vec<String> = supported.iter().map(render_value).collect();
    FieldError::new(
        path,
        FieldErrorKind::NotSupported,
        Some(value),
        format!("supported values: {}", list.join(", ")),
    )
}

/// A schema bound as the API server prints it (`1`, not `1.0`).
fn bound(n: &Value) -> String {
    match n.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() < 1e21 => format!("{}", f as i128),
        Some(f) => format!("{f}"),
        None => n.to_string(),
    }
}

fn type_matches(expected: &str, value: &Value) -> bool {
    match (expected, value) {
        ("object", Value::Object(_))
        | ("array", Value::Array(_))
        | ("string", Value::String(_))
        | ("boolean", Value::Bool(_))
        | ("number", Value::Number(_)) => true,
        ("integer", Value::Number(n)) => is_integer(n),
        _ => false,
    }
}

/// Checks `value` at `path` against `schema`, appending every failure. `resource` marks an
/// object that is a whole resource (the root, or `x-kubernetes-embedded-resource`), whose
/// `apiVersion`, `kind` and `metadata` need no declaration.
fn check(schema: &Value, value: &Value, path: &str, resource: bool, errors: &mut Vec<FieldError>) {
    let resource = resource || flag(schema, "x-kubernetes-embedded-resource");
    if value.is_null() {
        if !is_nullable(schema) {
            let expected = schema
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or("object");
            errors.push(type_mismatch(path, expected, value));
        }
        return;
    }
    if flag(schema, "x-kubernetes-int-or-string") {
        if !matches!(value, Value::String(_)) && !type_matches("integer", value) {
            errors.push(type_mismatch(path, "integer-or-string", value));
            return;
        }
    } else if let Some(expected) = schema.get("type").and_then(Value::as_str)
        && !type_matches(expected, value)
    {
        // Like the API server, nothing below a value of the wrong type is looked at.
        errors.push(type_mismatch(path, expected, value));
        return;
    }

    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.iter().any(|a| json_equal(a, value))
    {
        errors.push(not_supported(path, value.clone(), allowed));
    }

    match value {
        Value::String(s) => check_string(schema, s, value, path, errors),
        Value::Number(n) => check_number(schema, n, value, path, errors),
        Value::Array(items) => check_array(schema, items, value, path, errors),
        Value::Object(fields) => check_object(schema, fields, value, path, resource, errors),
        Value::Bool(_) | Value::Null => {}
    }
}

/// JSON equality with numbers compared by value (`1` equals `1.0`).
fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x == y || x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

fn check_string(schema: &Value, s: &str, value: &Value, path: &str, errors: &mut Vec<FieldError>) {
    if let Some("date-time") = schema.get("format").and_then(Value::as_str)
        && s.parse::<jiff::Timestamp>().is_err()
    {
        errors.push(FieldError::new(
            path,
            FieldErrorKind::TypeMismatch,
            Some(value.clone()),
            format!(
                "{} must be of type date-time: {}",
                in_body(path),
                go_quote(s)
            ),
        ));
    }
    // The API server counts code points, though its message says bytes.
    let length = s.chars().count() as u64;
    if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
        && length > max
    {
        errors.push(FieldError::new(
            path,
            FieldErrorKind::TooLong,
            Some(value.clone()),
            format!(
                "may not be more than {max} {}",
                if max == 1 { "byte" } else { "bytes" }
            ),
        ));
    }
    if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
        && length < min
    {
        errors.push(FieldError::new(
            path,
            FieldErrorKind::Invalid,
            Some(value.clone()),
            format!("{} should be at least {min} chars long", in_body(path)),
        ));
    }
    if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
        match pattern_matches(pattern, s) {
            Ok(true) => {}
            Ok(false) => errors.push(FieldError::new(
                path,
                FieldErrorKind::Invalid,
                Some(value.clone()),
                format!("{} should match '{pattern}'", in_body(path)),
            )),
            Err(e) => errors.push(FieldError::new(
                path,
                FieldErrorKind::Invalid,
                Some(value.clone()),
                format!("the schema's pattern '{pattern}' does not compile: {e}"),
            )),
        }
    }
}

fn check_number(
    schema: &Value,
    n: &Number,
    value: &Value,
    path: &str,
    errors: &mut Vec<FieldError>,
) {
    let format = schema.get("format").and_then(Value::as_str);
    let range = match format {
        Some("int32") => Some((i32::MIN as f64, i32::MAX as f64)),
        Some("int64") => Some((i64::MIN as f64, i64::MAX as f64)),
        _ => None,
    };
    if let (Some(format), Some((lo, hi))) = (format, range) {
        let fits = match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => (lo..=hi).contains(&(i as f64)),
            (None, Some(f)) => (lo..=hi).contains(&f) && !n.is_u64(),
            (None, None) => false,
        };
        if !fits {
            errors.push(FieldError::new(
                path,
                FieldErrorKind::Invalid,
                Some(value.clone()),
                format!(
                    "{} must be of type {format}: {}",
                    in_body(path),
                    go_quote(&n.to_string())
                ),
            ));
        }
    }
    let Some(x) = n.as_f64() else { return };
    if let Some(min) = schema.get("minimum") {
        let exclusive = flag(schema, "exclusiveMinimum");
        let m = min.as_f64().unwrap_or(f64::NEG_INFINITY);
        if x < m || (exclusive && x == m) {
            let relation = if exclusive {
                "greater than"
            } else {
                "greater than or equal to"
            };
            errors.push(FieldError::new(
                path,
                FieldErrorKind::Invalid,
                Some(value.clone()),
                format!("{} should be {relation} {}", in_body(path), bound(min)),
            ));
        }
    }
    if let Some(max) = schema.get("maximum") {
        let exclusive = flag(schema, "exclusiveMaximum");
        let m = max.as_f64().unwrap_or(f64::INFINITY);
        if x > m || (exclusive && x == m) {
            let relation = if exclusive {
                "less than"
            } else {
                "less than or equal to"
            };
            errors.push(FieldError::new(
                path,
                FieldErrorKind::Invalid,
                Some(value.clone()),
                format!("{} should be {relation} {}", in_body(path), bound(max)),
            ));
        }
    }
}

fn too_many(path: &str, count: usize, max: u64) -> FieldError {
    FieldError::new(
        path,
        FieldErrorKind::TooMany,
        Some(Value::from(count)),
        format!(
            "must have at most {max} {}",
            if max == 1 { "item" } else { "items" }
        ),
    )
}

/// `max<Noun>`/`min<Noun>` (Items or Properties) of a list or map with `len` entries.
fn check_count(
    schema: &Value,
    noun: &str,
    len: usize,
    value: &Value,
    path: &str,
    errors: &mut Vec<FieldError>,
) {
    if let Some(max) = schema.get(format!("max{noun}")).and_then(Value::as_u64)
        && len as u64 > max
    {
        errors.push(too_many(path, len, max));
    }
    if let Some(min) = schema.get(format!("min{noun}")).and_then(Value::as_u64)
        && (len as u64) < min
    {
        errors.push(FieldError::new(
            path,
            FieldErrorKind::Invalid,
            Some(value.clone()),
            format!(
                "{} should have at least {min} {}",
                in_body(path),
                noun.to_lowercase()
            ),
        ));
    }
}

fn check_array(
    schema: &Value,
    items: &[Value],
    value: &Value,
    path: &str,
    errors: &mut Vec<FieldError>,
) {
    check_count(schema, "Items", items.len(), value, path, errors);
    if let Some(item_schema) = schema.get("items") {
        for (i, item) in items.iter().enumerate() {
            check(item_schema, item, &format!("{path}[{i}]"), false, errors);
        }
    }
    // List types: duplicates (only among items of the right shape; the rest already failed).
    match schema.get("x-kubernetes-list-type").and_then(Value::as_str) {
        Some("set") => {
            let mut seen = HashSet::new();
            for (i, item) in items.iter().enumerate() {
                if !seen.insert(item.to_string()) {
                    errors.push(FieldError::new(
                        format!("{path}[{i}]"),
                        FieldErrorKind::Duplicate,
                        Some(item.clone()),
                        "",
                    ));
                }
            }
        }
        Some("map") => {
            let keys: Vec<&str> = schema
                .get("x-kubernetes-list-map-keys")
                .and_then(Value::as_array)
                .map(|k| k.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let mut seen = HashSet::new();
            for (i, item) in items.iter().enumerate() {
                let Some(fields) = item.as_object() else {
                    continue;
                };
                let key: Map<String, Value> = keys
                    .iter()
                    .filter_map(|k| Some(((*k).to_owned(), fields.get(*k)?.clone())))
                    .collect();
                let key = Value::Object(key);
                if !seen.insert(key.to_string()) {
                    errors.push(FieldError::new(
                        format!("{path}[{i}]"),
                        FieldErrorKind::Duplicate,
                        Some(key),
                        "",
                    ));
                }
            }
        }
        _ => {}
    }
}

fn check_object(
    schema: &Value,
    fields: &Map<String, Value>,
    value: &Value,
    path: &str,
    resource: bool,
    errors: &mut Vec<FieldError>,
) {
    check_count(schema, "Properties", fields.len(), value, path, errors);
    let props = schema.get("properties").and_then(Value::as_object);
    if let Some(required) = schema.get("required").and_then(Value::as_array) {
        for name in required.iter().filter_map(Value::as_str) {
            if !fields.contains_key(name) {
                errors.push(FieldError::new(
                    child_path(path, name),
                    FieldErrorKind::Required,
                    None,
                    "",
                ));
            }
        }
    }
    let additional = schema.get("additionalProperties");
    let preserve_unknown = flag(schema, "x-kubernetes-preserve-unknown-fields");
    for (key, v) in fields {
        if resource && key == "metadata" {
            match v {
                Value::Object(meta) => check_metadata(meta, &child_path(path, key), errors),
                _ => errors.push(type_mismatch(&child_path(path, key), "object", v)),
            }
        } else if let Some(prop) = props.and_then(|p| p.get(key)) {
            check(prop, v, &child_path(path, key), false, errors);
        } else if resource && (key == "apiVersion" || key == "kind") {
            if !v.is_string() {
                errors.push(type_mismatch(&child_path(path, key), "string", v));
            }
        } else if let Some(map_values) = additional.filter(|a| a.is_object()) {
            check(map_values, v, &child_path(path, key), false, errors);
        } else if !(preserve_unknown || additional == Some(&Value::Bool(true))) {
            errors.push(FieldError::new(
                child_path(path, key),
                FieldErrorKind::Unknown,
                None,
                "",
            ));
        }
    }
}

/// The API server's `metadata` checks for a custom resource that the schema cannot express:
/// `name` a DNS-1123 subdomain (`NameIsDNSSubdomain`), `namespace` a DNS-1123 label, with the
/// API server's messages. Neither may be anything but a string. Everything else in `metadata`
/// (labels, annotations …) is left to the API server's own rules and not checked here.
fn check_metadata(meta: &Map<String, Value>, path: &str, errors: &mut Vec<FieldError>) {
    for (key, check) in [
        ("name", dns_subdomain_problem as fn(&str) -> Option<String>),
        ("namespace", dns_label_problem),
    ] {
        let field = child_path(path, key);
        match meta.get(key) {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) => {
                if let Some(problem) = check(s) {
                    errors.push(FieldError::new(
                        field,
                        FieldErrorKind::Invalid,
                        Some(Value::from(s.as_str())),
                        problem,
                    ));
                }
            }
            Some(other) => errors.push(type_mismatch(&field, "string", other)),
        }
    }
}

const DNS1123_LABEL: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";

fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// Why `s` is not a lowercase RFC 1123 subdomain (at most 253 characters), in the API
/// server's words; `None` when it is one.
pub fn dns_subdomain_problem(s: &str) -> Option<String> {
    if s.len() > 253 {
        return Some("must be no more than 253 characters".into());
    }
    if s.split('.').all(is_dns_label) {
        return None;
    }
    Some(format!(
        "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, \
         '-' or '.', and must start and end with an alphanumeric character (e.g. \
         'example.com', regex used for validation is '{DNS1123_LABEL}(\\.{DNS1123_LABEL})*')"
    ))
}

/// Why `s` is not a lowercase RFC 1123 label (at most 63 characters), in the API server's
/// words; `None` when it is one.
pub fn dns_label_problem(s: &str) -> Option<String> {
    if s.len() > 63 {
        return Some("must be no more than 63 characters".into());
    }
    if is_dns_label(s) {
        return None;
    }
    Some(format!(
        "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or \
         '-', and must start and end with an alphanumeric character (e.g. 'my-name', or \
         '123-abc', regex used for validation is '{DNS1123_LABEL}')"
    ))
}

// ---------------------------------------------------------------------------------------------
// Patterns
// ---------------------------------------------------------------------------------------------

/// Whether `s` matches the schema pattern (RE2 syntax, as the API server evaluates it).
/// Compiled patterns are cached for the life of the process, shared (`Arc`): a cloned `Regex`
/// would build its matching cache anew on every use, which cost more than the match.
fn pattern_matches(pattern: &str, s: &str) -> Result<bool, String> {
    type Cache = Mutex<HashMap<String, Result<Arc<Regex>, String>>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let compiled = {
        let mut cache = CACHE
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        cache
            .entry(pattern.to_owned())
            .or_insert_with(|| {
                Regex::new(&re2_to_rust(pattern))
                    .map(Arc::new)
                    .map_err(|e| e.to_string())
            })
            .clone()
    };
    compiled.map(|re| re.is_match(s))
}

/// Rewrites the Perl classes and word boundaries, which are ASCII-only in RE2 (Go) but
/// Unicode-aware in the `regex` crate, to their ASCII meaning: `[^@\s]` must accept a
/// no-break space, as the API server does. Everything else is the same syntax.
fn re2_to_rust(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len() + 16);
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('s') => out.push_str(r"[\t\n\x0C\r ]"),
            Some('S') => out.push_str(r"[^\t\n\x0C\r ]"),
            Some('d') => out.push_str("[0-9]"),
            Some('D') => out.push_str("[^0-9]"),
            Some('w') => out.push_str("[0-9A-Za-z_]"),
            Some('W') => out.push_str("[^0-9A-Za-z_]"),
            Some('b') => out.push_str(r"(?-u:\b)"),
            Some('B') => out.push_str(r"(?-u:\B)"),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// CEL
// ---------------------------------------------------------------------------------------------

/// A failed CEL rule as the API server reports it: `Invalid value: "<schema type>": message`
/// (or `Forbidden`/`Required value`/`Duplicate value` when the rule names that `reason`), at
/// the field in API-server notation.
fn cel_error(schema: &Value, object: &Value, error: &ValidationError) -> FieldError {
    let (field, node_type) = resolve_cel_path(schema, object, &error.field_path);
    let kind = match (&error.kind, error.reason.as_deref()) {
        (ErrorKind::ValidationFailure, Some("FieldValueForbidden")) => FieldErrorKind::Forbidden,
        (ErrorKind::ValidationFailure, Some("FieldValueRequired")) => FieldErrorKind::Required,
        (ErrorKind::ValidationFailure, Some("FieldValueDuplicate")) => FieldErrorKind::Duplicate,
        _ => FieldErrorKind::Invalid,
    };
    FieldError::new(
        field,
        kind,
        node_type.map(Value::from),
        error.message.clone(),
    )
}

/// A rule of the form `self.matches('<pattern>')` or `!self.matches('<pattern>')` with a fixed
/// `message` and nothing else: `(negated, pattern, message)`. Such rules are evaluated here with
/// a cached regex ([`pattern_matches`]) rather than by the CEL engine, which compiles the
/// regex anew on every evaluation — most of the time of a no-op `roster apply` at scale.
fn native_rule(rule: &Value) -> Option<(bool, &str, &str)> {
    let fields = rule.as_object()?;
    if fields.keys().any(|k| k != "rule" && k != "message") {
        return None;
    }
    let message = fields.get("message")?.as_str()?;
    let text = fields.get("rule")?.as_str()?;
    let (negated, call) = match text.strip_prefix('!') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let pattern = call.strip_prefix("self.matches('")?.strip_suffix("')")?;
    if pattern.contains(['\\', '\'']) {
        return None;
    }
    Some((negated, pattern, message))
}

/// `schema` without the rules [`native_rule`] recognises (an `x-kubernetes-validations` left
/// empty is removed).
fn without_native_rules(schema: &Value) -> Value {
    match schema {
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .filter_map(|(key, value)| {
                    if key != RULES {
                        return Some((key.clone(), without_native_rules(value)));
                    }
                    let kept: Vec<Value> = value
                        .as_array()?
                        .iter()
                        .filter(|rule| native_rule(rule).is_none())
                        .cloned()
                        .collect();
                    (!kept.is_empty()).then(|| (key.clone(), Value::Array(kept)))
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_native_rules).collect()),
        other => other.clone(),
    }
}

const RULES: &str = "x-kubernetes-validations";

/// Evaluates the rules [`native_rule`] recognises on every string of `value` (admitted form,
/// after the structural checks passed), reporting a failure exactly as [`cel_error`] reports the
/// same rule failed in the CEL engine.
fn check_native_rules(schema: &Value, value: &Value, path: &str, errors: &mut Vec<FieldError>) {
    if let (Some(rules), Value::String(s)) = (schema.get(RULES).and_then(Value::as_array), value) {
        for (negated, pattern, message) in rules.iter().filter_map(native_rule) {
            match pattern_matches(pattern, s) {
                Ok(matched) if matched != negated => {}
                Ok(_) => errors.push(FieldError::new(
                    path,
                    FieldErrorKind::Invalid,
                    Some(Value::from("string")),
                    message,
                )),
                Err(e) => errors.push(FieldError::new(
                    path,
                    FieldErrorKind::Invalid,
                    Some(Value::from("string")),
                    format!("'{pattern}' not a valid regex: {e}"),
                )),
            }
        }
    }
    match value {
        Value::Object(fields) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            for (key, v) in fields {
                if let Some(prop) = props.and_then(|p| p.get(key)) {
                    check_native_rules(prop, v, &child_path(path, key), errors);
                } else if let Some(map_values) = additional {
                    check_native_rules(map_values, v, &child_path(path, key), errors);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, v) in items.iter().enumerate() {
                    check_native_rules(item_schema, v, &format!("{path}[{i}]"), errors);
                }
            }
        }
        _ => {}
    }
}

/// Turns kube-cel's field path (`spec.mapping.key`, `spec.list[0]`) into the API server's
/// (`spec.mapping[key]`), and finds the schema type of the node it names.
fn resolve_cel_path(schema: &Value, object: &Value, path: &str) -> (String, Option<String>) {
    let mut out = String::new();
    let mut node = Some(schema);
    let mut value = Some(object);
    let path = path.strip_prefix('.').unwrap_or(path);
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (name, indexes) = match part.find('[') {
            Some(i) => part.split_at(i),
            None => (part, ""),
        };
        if !name.is_empty() {
            let prop = node
                .and_then(|n| n.get("properties"))
                .and_then(|p| p.get(name));
            let map_values = node
                .and_then(|n| n.get("additionalProperties"))
                .filter(|a| a.is_object());
            if prop.is_none()
                && let Some(map_values) = map_values
            {
                out.push_str(&format!("[{name}]"));
                node = Some(map_values);
            } else {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(name);
                node = prop;
            }
            value = value.and_then(|v| v.get(name));
        }
        for index in indexes.split('[').filter(|i| !i.is_empty()) {
            let index = index.trim_end_matches(']');
            out.push_str(&format!("[{index}]"));
            node = node.and_then(|n| n.get("items"));
            value = value.and_then(|v| v.get(index.parse::<usize>().ok()?));
        }
    }
    let node_type = node
        .and_then(|n| n.get("type"))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or_else(|| value.map(|v| type_name(v).to_owned()));
    (out, node_type)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    use FieldErrorKind::*;

    fn obj(kind: &str, name: &str, spec: Value) -> Value {
        json!({
            "apiVersion": "roster.io/v1alpha1",
            "kind": kind,
            "metadata": {"name": name, "namespace": "physics"},
            "spec": spec,
        })
    }

    fn account(spec: Value) -> Value {
        obj("Account", "ada", spec)
    }

    fn person(spec: Value) -> Value {
        obj("Person", "ada", spec)
    }

    const ED25519: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHc0lXfRmMdJ7qIc1jO6m3kQ3uWZ5kz0yN1sJ7nG2hB ada@laptop";

    fn valid_account_spec() -> Value {
        json!({
            "person": "ada",
            "username": "ada",
            "uidNumber": 10001,
            "loginShell": "/bin/bash",
            "homeDirectory": "/home/ada",
            "projects": ["physics", "astro"],
            "defaultProject": "physics",
            "sshPublicKeys": [ED25519],
            "validUntil": "2027-12-31",
            "locked": false,
            "lockReason": null,
            "deletionPolicy": "Deactivate",
            "purgeAfter": "90d",
        })
    }

    /// `validate_object` as (field, kind) pairs, for compact assertions.
    fn errors_of(object: &Value) -> Vec<(String, FieldErrorKind)> {
        match validate_object(object, None) {
            Ok(()) => vec![],
            Err(errors) => errors.into_iter().map(|e| (e.field, e.kind)).collect(),
        }
    }

    fn one(field: &str, kind: FieldErrorKind) -> Vec<(String, FieldErrorKind)> {
        vec![(field.to_owned(), kind)]
    }

    /// A blocking structural error, plus the API server's note that CEL was skipped.
    fn blocking(field: &str, kind: FieldErrorKind) -> Vec<(String, FieldErrorKind)> {
        vec![(field.to_owned(), kind), (String::new(), Invalid)]
    }

    fn with(mut spec: Value, key: &str, value: Value) -> Value {
        spec[key] = value;
        spec
    }

    #[test]
    fn valid_documents_of_every_kind_pass() {
        let documents = [
            account(valid_account_spec()),
            // Only the required fields.
            account(json!({"person": "ada", "username": "ada"})),
            person(json!({
                "givenName": "Ada",
                "familyName": "Lovelace",
                "displayName": "Ada Lovelace",
                "email": "ada@example.org",
                "institute": "Institut für Physik",
                "department": "Theorie",
                "telephoneNumber": "+49 (0)30 1234-5",
                "validUntil": "2027-06-30T12:00:00Z",
                "locked": false,
            })),
            obj(
                "Project",
                "physics",
                json!({
                    "description": "Theoretical physics",
                    "institute": "Physics",
                    "leaders": ["ada"],
                    "members": ["bob", "carol"],
                    "gidNumber": 20001,
                    "validUntil": "2027-12-31",
                    "slurm": {
                        "clusters": ["hpc"],
                        "parent": "physics_root",
                        "fairshare": 10,
                        "qos": ["normal"],
                        "defaultQos": "normal",
                        "partitions": ["batch"],
                        "limits": {"grpTRES": {"cpu": 128, "mem": 1024}, "maxWall": "2d", "grpJobs": 100},
                    },
                    "gold": {"allocations": [
                        {"amount": 1000, "start": "2026-01-01", "end": "2026-12-31"},
                    ]},
                    "deletionPolicy": "Orphan",
                }),
            ),
            obj(
                "Guest",
                "visitor",
                json!({
                    "host": "ada",
                    "type": "Personal",
                    "validUntil": "2026-12-31",
                    "person": {"givenName": "Grace", "familyName": "Hopper", "email": "grace@example.org"},
                    "account": {"username": "ghopper", "projects": ["physics"]},
                    "policy": {"loginGrace": "30d", "purgeAfter": "60d"},
                }),
            ),
            obj(
                "Guest",
                "build-bot",
                json!({
                    "host": "ada",
                    "type": "Technical",
                    "adminGroup": "physics",
                    "person": {"givenName": "Build", "familyName": "Bot"},
                    "account": {"username": "buildbot"},
                }),
            ),
            obj(
                "ImportSource",
                "hr",
                json!({
                    "sourceUID": "hr-db:export",
                    "reader": {"type": "Csv", "csv": {
                        "configMapRef": {"name": "hr-export", "key": "people.csv"},
                        "delimiter": ";",
                    }},
                    "mapping": {"Vorname": "givenName", "Nachname": "familyName"},
                    "recordUID": "<personalnummer>",
                    "usernameScheme": {"template": "<firstname>[0].<lastname>", "maxLength": 16},
                    "mode": "Sync",
                    "deletionGracePeriod": {"deactivation": 0, "deletion": 90},
                    "maxDeletions": {"count": 10, "percent": 5},
                    "interval": "1h",
                }),
            ),
        ];
        for document in &documents {
            assert_eq!(validate_object(document, None), Ok(()), "{document}");
        }
    }

    #[test]
    fn unknown_field_is_refused() {
        let doc = account(with(valid_account_spec(), "usernme", json!("ada")));
        assert_eq!(errors_of(&doc), blocking("spec.usernme", Unknown));
        // Also at the root and in nested objects; apiVersion/kind/metadata need no schema.
        let mut doc = account(valid_account_spec());
        doc["spec2"] = json!({});
        assert_eq!(errors_of(&doc), blocking("spec2", Unknown));
        let project = obj(
            "Project",
            "p",
            json!({"slurm": {"limits": {"grpTres": {}}}}),
        );
        assert_eq!(
            errors_of(&project),
            blocking("spec.slurm.limits.grpTres", Unknown)
        );
    }

    #[test]
    fn wrong_type_is_refused_without_descending() {
        let doc = account(with(valid_account_spec(), "uidNumber", json!("abc")));
        assert_eq!(errors_of(&doc), blocking("spec.uidNumber", TypeMismatch));
        // An object where a list belongs: one error, nothing reported inside it.
        let doc = account(with(valid_account_spec(), "projects", json!({"x": 1})));
        assert_eq!(errors_of(&doc), blocking("spec.projects", TypeMismatch));
        let doc = account(with(valid_account_spec(), "locked", json!("yes")));
        assert_eq!(errors_of(&doc), blocking("spec.locked", TypeMismatch));
    }

    #[test]
    fn integers_may_be_whole_floats() {
        let doc = account(with(valid_account_spec(), "uidNumber", json!(10001.0)));
        assert_eq!(errors_of(&doc), vec![]);
        let doc = account(with(valid_account_spec(), "uidNumber", json!(10001.5)));
        assert_eq!(errors_of(&doc), blocking("spec.uidNumber", TypeMismatch));
    }

    #[test]
    fn missing_required_field_is_refused() {
        let mut spec = valid_account_spec();
        spec.as_object_mut().unwrap().remove("person");
        assert_eq!(errors_of(&account(spec)), blocking("spec.person", Required));
        let mut doc = account(valid_account_spec());
        doc.as_object_mut().unwrap().remove("spec");
        assert_eq!(errors_of(&doc), blocking("spec", Required));
    }

    #[test]
    fn nulls_follow_nullable_and_defaults() {
        // nullable: null is kept and valid.
        let doc = account(with(valid_account_spec(), "loginShell", Value::Null));
        assert_eq!(errors_of(&doc), vec![]);
        // Not nullable, no default: dropped, as the API server prunes it.
        let doc = account(with(valid_account_spec(), "projects", Value::Null));
        assert_eq!(errors_of(&doc), vec![]);
        // ...so a required one is then missing.
        let doc = account(with(valid_account_spec(), "person", Value::Null));
        assert_eq!(errors_of(&doc), blocking("spec.person", Required));
        // Not nullable with a default: defaulted.
        let doc = account(with(valid_account_spec(), "deletionPolicy", Value::Null));
        assert_eq!(errors_of(&doc), vec![]);
        // A null list item is not pruned: it is the wrong type.
        let doc = account(with(valid_account_spec(), "projects", json!(["a", null])));
        assert_eq!(errors_of(&doc), blocking("spec.projects[1]", TypeMismatch));
    }

    #[test]
    fn apply_defaults_fills_in_and_prunes_like_the_api_server() {
        let schema = &roster_schemas()[1].versions[0].schema;
        let doc = account(
            json!({"person": "ada", "username": "ada", "projects": null, "loginShell": null}),
        );
        let admitted = apply_defaults(schema, &doc);
        assert_eq!(
            admitted["spec"],
            json!({"person": "ada", "username": "ada", "loginShell": null,
                   "deletionPolicy": "Deactivate", "locked": false})
        );
    }

    #[test]
    fn value_outside_the_enum_is_refused() {
        let doc = account(with(
            valid_account_spec(),
            "deletionPolicy",
            json!("Delete"),
        ));
        assert_eq!(
            errors_of(&doc),
            blocking("spec.deletionPolicy", NotSupported)
        );
    }

    #[test]
    fn pattern_mismatch_is_refused_and_does_not_block_cel() {
        let doc = account(with(valid_account_spec(), "loginShell", json!("bash")));
        assert_eq!(errors_of(&doc), one("spec.loginShell", Invalid));
        // The API server still runs the CEL rules after a pattern (or bound) failure.
        let spec = with(valid_account_spec(), "loginShell", json!("bash"));
        let doc = account(with(spec, "username", json!("root")));
        assert_eq!(
            errors_of(&doc),
            vec![
                ("spec.loginShell".to_owned(), Invalid),
                ("spec.username".to_owned(), Invalid)
            ]
        );
    }

    #[test]
    fn too_long_username_is_too_long_and_cel_is_skipped() {
        // 33 characters: maxLength refuses it; the CEL format rule (which would refuse it too)
        // does not run, because the API server skips CEL after a blocking structural error.
        let doc = account(with(
            valid_account_spec(),
            "username",
            json!("a".repeat(33)),
        ));
        let errors = validate_object(&doc, None).unwrap_err();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert_eq!(
            (errors[0].field.as_str(), errors[0].kind),
            ("spec.username", TooLong)
        );
        assert_eq!(errors[1].field, "");
        assert_eq!(errors[1].message, CEL_SKIPPED);
        // 32 characters is the limit, and passes both.
        let doc = account(with(
            valid_account_spec(),
            "username",
            json!("a".repeat(32)),
        ));
        assert_eq!(errors_of(&doc), vec![]);
    }

    #[test]
    fn max_length_counts_code_points() {
        let spec = json!({"givenName": "ü".repeat(128), "familyName": "Lovelace"});
        assert_eq!(errors_of(&person(spec)), vec![]);
        let spec = json!({"givenName": "ü".repeat(129), "familyName": "Lovelace"});
        assert_eq!(
            errors_of(&person(spec)),
            blocking("spec.givenName", TooLong)
        );
    }

    #[test]
    fn min_length_is_refused() {
        let doc = account(with(valid_account_spec(), "person", json!("")));
        // minLength and the pattern both refuse "", neither blocks CEL.
        assert_eq!(
            errors_of(&doc),
            vec![
                ("spec.person".to_owned(), Invalid),
                ("spec.person".to_owned(), Invalid)
            ]
        );
    }

    #[test]
    fn too_many_items_are_refused() {
        let keys = vec![json!(ED25519); 33];
        let doc = account(with(valid_account_spec(), "sshPublicKeys", json!(keys)));
        assert_eq!(errors_of(&doc), blocking("spec.sshPublicKeys", TooMany));
        let keys = vec![json!(ED25519); 32];
        let doc = account(with(valid_account_spec(), "sshPublicKeys", json!(keys)));
        assert_eq!(errors_of(&doc), vec![]);
    }

    #[test]
    fn list_items_are_checked_with_their_index() {
        let doc = account(with(
            valid_account_spec(),
            "sshPublicKeys",
            json!([ED25519, "not a key"]),
        ));
        assert_eq!(errors_of(&doc), one("spec.sshPublicKeys[1]", Invalid));
    }

    fn import_source(mapping: Value) -> Value {
        obj(
            "ImportSource",
            "hr",
            json!({
                "sourceUID": "hr",
                "reader": {"type": "Csv", "csv": {"path": "/data/hr.csv"}},
                "mapping": mapping,
                "recordUID": "<id>",
            }),
        )
    }

    #[test]
    fn map_values_are_checked_under_their_key() {
        let doc = import_source(json!({"Vorname": "g".repeat(65)}));
        assert_eq!(errors_of(&doc), blocking("spec.mapping.Vorname", TooLong));
        let doc = import_source(json!({"Vorname": 7}));
        assert_eq!(
            errors_of(&doc),
            blocking("spec.mapping.Vorname", TypeMismatch)
        );
        let too_many: Map<String, Value> = (0..129)
            .map(|i| (format!("c{i}"), json!("givenName")))
            .collect();
        assert_eq!(
            errors_of(&import_source(Value::Object(too_many))),
            blocking("spec.mapping", TooMany)
        );
        let project = obj(
            "Project",
            "p",
            json!({"slurm": {"limits": {"grpTRES": {"cpu": "lots"}}}}),
        );
        assert_eq!(
            errors_of(&project),
            blocking("spec.slurm.limits.grpTRES.cpu", TypeMismatch)
        );
    }

    #[test]
    fn bounds_are_refused() {
        let doc = account(with(valid_account_spec(), "uidNumber", json!(0)));
        let errors = validate_object(&doc, None).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(
            errors[0].to_string(),
            "spec.uidNumber: Invalid value: 0: spec.uidNumber in body should be greater than or equal to 1"
        );
        let doc = account(with(
            valid_account_spec(),
            "uidNumber",
            json!(4294967295_u64),
        ));
        let errors = validate_object(&doc, None).unwrap_err();
        assert_eq!(
            errors[0].to_string(),
            "spec.uidNumber: Invalid value: 4294967295: spec.uidNumber in body should be less than or equal to 4294967294"
        );
    }

    #[test]
    fn int32_format_is_range_checked() {
        let source = |percent: Value| {
            let mut doc = import_source(json!({}));
            doc["spec"]["usernameScheme"] = json!({"template": "<lastname>", "maxLength": percent});
            doc
        };
        assert_eq!(errors_of(&source(json!(16))), vec![]);
        // Out of int32 (and of the maximum, 32).
        assert_eq!(
            errors_of(&source(json!(3_000_000_000_i64))),
            vec![
                ("spec.usernameScheme.maxLength".to_owned(), Invalid),
                ("spec.usernameScheme.maxLength".to_owned(), Invalid)
            ]
        );
    }

    #[test]
    fn cel_rule_failure_is_reported_with_its_message() {
        let doc = account(with(valid_account_spec(), "username", json!("root")));
        let errors = validate_object(&doc, None).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].field, "spec.username");
        assert_eq!(errors[0].kind, Invalid);
        assert_eq!(
            errors[0].message,
            "username is reserved for a system account"
        );
        assert_eq!(errors[0].value, Some(json!("string")));
    }

    #[test]
    fn regex_rules_evaluated_natively_fail_exactly_as_in_the_cel_engine() {
        // The `self.matches(…)` rules are taken out of what the CEL engine compiles …
        for crd in roster_schemas() {
            for version in &crd.versions {
                let cel = version.cel_schema.to_string();
                assert!(!cel.contains("\"self.matches("), "{}: {cel}", crd.kind);
                assert!(!cel.contains("\"!self.matches("), "{}: {cel}", crd.kind);
            }
        }
        // … and each fails (or passes) with the same errors as the full schema in the engine.
        let guest = |username: &str| {
            obj(
                "Guest",
                "visitor",
                json!({
                    "host": "ada", "type": "Technical", "adminGroup": "physics",
                    "person": {"givenName": "B", "familyName": "Bot"},
                    "account": {"username": username},
                }),
            )
        };
        let project = |group: &str| obj("Project", "physics", json!({"groupName": group}));
        let documents = [
            account(with(valid_account_spec(), "username", json!("Ada"))),
            account(with(valid_account_spec(), "username", json!("root"))),
            account(with(valid_account_spec(), "username", json!("a)(uid=*"))),
            account(with(
                valid_account_spec(),
                "homeDirectory",
                json!("/home/../x"),
            )),
            account(with(
                valid_account_spec(),
                "homeDirectory",
                json!("/etc/ada"),
            )),
            account(with(
                valid_account_spec(),
                "homeDirectory",
                json!("/etc/../../x"),
            )),
            account(with(
                valid_account_spec(),
                "homeDirectory",
                json!("/home//ada"),
            )),
            account(with(
                valid_account_spec(),
                "homeDirectory",
                json!("/home/ada/"),
            )),
            account(valid_account_spec()),
            guest("Bob!"),
            guest("bob"),
            project("Phys ics"),
            project("physics"),
        ];
        let mut failed = 0;
        for document in documents {
            let kind = document["kind"].as_str().unwrap();
            let crd = roster_schemas().iter().find(|c| c.kind == kind).unwrap();
            let mut in_engine = validate_against(&crd.versions[0].schema, &document, None);
            let mut native = validate_object(&document, None).err().unwrap_or_default();
            let key = |e: &FieldError| (e.field.clone(), e.message.clone());
            in_engine.sort_by_key(key);
            native.sort_by_key(key);
            assert_eq!(native, in_engine, "{document}");
            failed += usize::from(!native.is_empty());
        }
        assert_eq!(failed, 9);
    }

    #[test]
    fn cel_rules_on_objects_and_the_root() {
        let guest = obj(
            "Guest",
            "visitor",
            json!({
                "host": "ada",
                "type": "Personal",
                "person": {"givenName": "Grace", "familyName": "Hopper"},
                "account": {"username": "ghopper"},
            }),
        );
        let errors = validate_object(&guest, None).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(
            errors[0].to_string(),
            "spec: Invalid value: \"object\": a Personal guest needs validUntil"
        );
        // A Project whose name is no group name needs spec.groupName (a rule at the root).
        let project = obj("Project", "2024-lab", json!({}));
        let errors = validate_object(&project, None).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!((errors[0].field.as_str(), errors[0].kind), ("", Invalid));
        assert!(
            errors[0]
                .message
                .starts_with("metadata.name is not a valid group name")
        );
        let project = obj("Project", "2024-lab", json!({"groupName": "physics"}));
        assert_eq!(errors_of(&project), vec![]);
        // The exactly-one-reader rule, below a map-free path.
        let mut doc = import_source(json!({}));
        doc["spec"]["reader"]["csv"] =
            json!({"path": "/a", "secretRef": {"name": "s", "key": "k"}});
        assert_eq!(errors_of(&doc), one("spec.reader.csv", Invalid));
    }

    #[test]
    fn transition_rules_use_old() {
        let old = account(valid_account_spec());
        let new = account(with(valid_account_spec(), "username", json!("ada2")));
        let errors = validate_object(&new, Some(&old)).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(
            errors[0].to_string(),
            "spec.username: Invalid value: \"string\": username is immutable"
        );
        let new = account(with(valid_account_spec(), "uidNumber", json!(10002)));
        let errors = validate_object(&new, Some(&old)).unwrap_err();
        assert_eq!(
            errors[0].message,
            "uidNumber cannot be changed or removed once set"
        );
        // File mode has no old object: transition rules do not apply.
        assert_eq!(validate_object(&new, None), Ok(()));
    }

    #[test]
    fn control_characters_in_a_display_name_are_refused() {
        for bad in [
            "Ada\0Lovelace",
            "Ada\nLovelace",
            "Ada\u{1b}[31m",
            "Ada\u{7f}",
            "Ada\tL",
        ] {
            let doc = person(json!({"givenName": "Ada", "familyName": "L", "displayName": bad}));
            assert_eq!(errors_of(&doc), one("spec.displayName", Invalid), "{bad:?}");
        }
    }

    #[test]
    fn ldap_metacharacters_are_text_in_names_but_not_in_usernames() {
        let specials = r#",+"\<>;=#*()"#;
        let name = format!("Lovelace, Ada {specials} (née Byron)");
        let doc = person(json!({"givenName": "Ada", "familyName": name, "displayName": name}));
        assert_eq!(errors_of(&doc), vec![]);
        for c in specials.chars() {
            let username = format!("ad{c}a");
            let doc = account(with(valid_account_spec(), "username", json!(username)));
            let errors = validate_object(&doc, None).unwrap_err();
            assert_eq!(errors.len(), 1, "{username}: {errors:?}");
            assert_eq!(
                (errors[0].field.as_str(), errors[0].kind),
                ("spec.username", Invalid)
            );
            assert!(
                errors[0]
                    .message
                    .starts_with("username must be 1-32 characters")
            );
        }
        // A leading '#' or '=' in a project name is refused by its pattern as well.
        let doc = account(with(valid_account_spec(), "projects", json!(["#p"])));
        assert_eq!(errors_of(&doc), one("spec.projects[0]", Invalid));
    }

    #[test]
    fn every_error_is_reported() {
        let spec = json!({
            "person": "Ada",
            "username": "ada",
            "uidNumber": "abc",
            "loginShell": "bash",
            "deletionPolicy": "Delete",
            "usernme": "x",
            "projects": ["ok", "Not OK"],
        });
        let mut got = errors_of(&account(spec));
        got.sort_by(|a, b| a.0.cmp(&b.0));
        let want: Vec<(String, FieldErrorKind)> = [
            ("", Invalid),
            ("spec.deletionPolicy", NotSupported),
            ("spec.loginShell", Invalid),
            ("spec.person", Invalid),
            ("spec.projects[1]", Invalid),
            ("spec.uidNumber", TypeMismatch),
            ("spec.usernme", Unknown),
        ]
        .iter()
        .map(|(f, k)| (f.to_string(), *k))
        .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn status_is_ignored_and_metadata_only_shaped() {
        let mut doc = account(valid_account_spec());
        doc["status"] = json!({"phase": "Bogus", "whatever": 1});
        doc["metadata"]["labels"] = json!({"a": "b"});
        doc["metadata"]["anything"] = json!(1);
        assert_eq!(errors_of(&doc), vec![]);
        doc["metadata"] = json!("ada");
        assert_eq!(errors_of(&doc), blocking("metadata", TypeMismatch));
    }

    #[test]
    fn names_and_namespaces_are_dns_names_as_the_api_server_requires() {
        // LDAP DN and filter metacharacters, control characters, upper case, overlong.
        let long = "a".repeat(254);
        for bad in [
            "a,b",
            "a+b",
            "cn=x",
            "#x",
            "a\\b",
            "a\"b",
            "<>",
            ";",
            "admin)(uid=*",
            "*",
            "(",
            "a\u{0}b",
            "a\u{1b}",
            "a\r\nb",
            "Ada",
            "-a",
            "a.",
            "a b",
            &long,
        ] {
            let mut doc = account(valid_account_spec());
            doc["metadata"]["name"] = json!(bad);
            let errors = validate_object(&doc, None).unwrap_err();
            assert_eq!(errors.len(), 1, "{bad:?}: {errors:?}");
            assert_eq!(
                (errors[0].field.as_str(), errors[0].kind),
                ("metadata.name", Invalid),
                "{bad:?}"
            );
        }
        let mut doc = account(valid_account_spec());
        doc["metadata"]["name"] = json!("a,b");
        assert!(
            validate_object(&doc, None).unwrap_err()[0]
                .to_string()
                .starts_with(
                    "metadata.name: Invalid value: \"a,b\": a lowercase RFC 1123 subdomain"
                )
        );
        doc["metadata"]["name"] = json!("ada.lovelace-2");
        doc["metadata"]["namespace"] = json!("physics.dept");
        assert_eq!(errors_of(&doc), one("metadata.namespace", Invalid));
        doc["metadata"]["namespace"] = json!(7);
        assert_eq!(
            errors_of(&doc),
            blocking("metadata.namespace", TypeMismatch)
        );
        doc["metadata"]["namespace"] = json!("physics");
        assert_eq!(errors_of(&doc), vec![]);
    }

    #[test]
    fn kind_and_api_version_select_the_schema() {
        let mut doc = account(valid_account_spec());
        doc["kind"] = json!("Acount");
        let errors = validate_object(&doc, None).unwrap_err();
        assert_eq!(
            errors[0].to_string(),
            "kind: Unsupported value: \"Acount\": supported values: \"Person\", \"Account\", \
             \"Project\", \"Guest\", \"ImportSource\""
        );
        let mut doc = account(valid_account_spec());
        doc["apiVersion"] = json!("roster.io/v1");
        assert_eq!(errors_of(&doc), one("apiVersion", NotSupported));
        doc.as_object_mut().unwrap().remove("apiVersion");
        assert_eq!(errors_of(&doc), one("apiVersion", Required));
        assert_eq!(errors_of(&json!([])), one("", TypeMismatch));
    }

    #[test]
    fn validate_against_checks_status_formats_and_list_maps() {
        // With an explicit schema nothing is stripped: the status is validated too.
        let schema = &roster_schemas()[1].versions[0].schema;
        let condition = |t: &str, at: &str| json!({"type": t, "status": "True", "reason": "Ok", "message": "", "lastTransitionTime": at});
        let mut doc = account(valid_account_spec());
        doc["status"] = json!({"conditions": [
            condition("Ready", "2026-01-01T00:00:00Z"),
            condition("Ready", "2026-01-01T00:00:00+02:00"),
            condition("LdapSynced", "yesterday"),
        ]});
        let got: Vec<(String, FieldErrorKind)> = validate_against(schema, &doc, None)
            .into_iter()
            .map(|e| (e.field, e.kind))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "status.conditions[2].lastTransitionTime".to_owned(),
                    TypeMismatch
                ),
                ("status.conditions[1]".to_owned(), Duplicate),
                (String::new(), Invalid),
            ]
        );
    }

    #[test]
    fn generic_schemas_preserve_unknown_fields_and_int_or_string() {
        let schema = json!({"type": "object", "properties": {"spec": {
            "type": "object",
            "properties": {
                "port": {"x-kubernetes-int-or-string": true},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                "tags": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}},
            },
        }}});
        let ok = json!({"spec": {"port": "http", "free": {"a": [1]}, "tags": ["a", "b"]}});
        assert_eq!(validate_against(&schema, &ok, None), vec![]);
        let ok = json!({"spec": {"port": 80}});
        assert_eq!(validate_against(&schema, &ok, None), vec![]);
        let bad = json!({"spec": {"port": true, "tags": ["a", "a"]}});
        let got: Vec<(String, FieldErrorKind)> = validate_against(&schema, &bad, None)
            .into_iter()
            .map(|e| (e.field, e.kind))
            .collect();
        assert_eq!(
            got,
            vec![
                ("spec.port".to_owned(), TypeMismatch),
                ("spec.tags[1]".to_owned(), Duplicate),
                (String::new(), Invalid),
            ]
        );
    }

    #[test]
    fn patterns_use_re2_ascii_classes() {
        // Go's \s is ASCII whitespace: a no-break space is not \s, so the email passes.
        let doc =
            person(json!({"givenName": "A", "familyName": "L", "email": "ada\u{a0}x@example.org"}));
        assert_eq!(errors_of(&doc), vec![]);
        let doc =
            person(json!({"givenName": "A", "familyName": "L", "email": "ada x@example.org"}));
        assert_eq!(errors_of(&doc), one("spec.email", Invalid));
        assert_eq!(
            re2_to_rust(r"^[^@\s]+\d\\s$"),
            r"^[^@[\t\n\x0C\r ]]+[0-9]\\s$"
        );
    }

    #[test]
    fn display_looks_like_the_api_server() {
        let shown = |doc: &Value| -> Vec<String> {
            validate_object(doc, None)
                .unwrap_err()
                .iter()
                .map(ToString::to_string)
                .collect()
        };
        let note = format!("Invalid value: null: {CEL_SKIPPED}");
        assert_eq!(
            shown(&account(with(
                valid_account_spec(),
                "username",
                json!("root")
            ))),
            ["spec.username: Invalid value: \"string\": username is reserved for a system account"]
        );
        assert_eq!(
            shown(&account(with(valid_account_spec(), "usernme", json!("x")))),
            ["spec.usernme: Unknown field", note.as_str()]
        );
        assert_eq!(
            shown(&account(json!({"username": "ada"}))),
            ["spec.person: Required value", note.as_str()]
        );
        assert_eq!(
            shown(&account(with(
                valid_account_spec(),
                "deletionPolicy",
                json!("Delete")
            ))),
            [
                "spec.deletionPolicy: Unsupported value: \"Delete\": supported values: \
                 \"Deactivate\", \"Orphan\", \"PurgeImmediately\"",
                note.as_str()
            ]
        );
        assert_eq!(
            shown(&account(with(
                valid_account_spec(),
                "loginShell",
                json!("bash")
            ))),
            [
                "spec.loginShell: Invalid value: \"bash\": spec.loginShell in body should match \
              '^/[A-Za-z0-9._/+@-]{0,254}$'"
            ]
        );
        assert_eq!(
            shown(&account(with(
                valid_account_spec(),
                "uidNumber",
                json!("abc")
            ))),
            [
                "spec.uidNumber: Invalid value: \"string\": spec.uidNumber in body must be of \
                 type integer: \"string\"",
                note.as_str()
            ]
        );
        assert_eq!(
            shown(&account(with(
                valid_account_spec(),
                "username",
                json!("a".repeat(33))
            )))[0],
            "spec.username: Too long: may not be more than 32 bytes"
        );
        let keys = vec![json!(ED25519); 33];
        assert_eq!(
            shown(&account(with(
                valid_account_spec(),
                "sshPublicKeys",
                json!(keys)
            )))[0],
            "spec.sshPublicKeys: Too many: 33: must have at most 32 items"
        );
        assert_eq!(
            shown(&person(
                json!({"givenName": "A", "familyName": "L", "displayName": "Ada\0\u{7f}ü\""})
            )),
            [
                "spec.displayName: Invalid value: \"Ada\\x00\\x7fü\\\"\": spec.displayName in body \
              should match '^[^\\x00-\\x1f\\x7f]*$'"
            ]
        );
        assert_eq!(
            FieldError::new("spec.x", Forbidden, Some(json!("string")), "no").to_string(),
            "spec.x: Forbidden: no"
        );
    }
}
