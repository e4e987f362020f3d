//! Label and field selectors.
//!
//! [`LabelSelector`] is the structured form objects carry (`matchLabels`, `matchExpressions`);
//! [`Selector`] is the string form users type (`-l 'env in (prod),tier!=db,!legacy'`);
//! [`FieldSelector`] filters on a few fields a kind exposes (`spec.nodeName=node-1`).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{FieldError, FieldErrors};
use crate::resource::Resource;
use crate::validation::{is_label_value, is_qualified_name};

/// Operators of a [`LabelSelectorRequirement`].
pub mod label_operator {
    pub const IN: &str = "In";
    pub const NOT_IN: &str = "NotIn";
    pub const EXISTS: &str = "Exists";
    pub const DOES_NOT_EXIST: &str = "DoesNotExist";
    pub const ALL: &[&str] = &[IN, NOT_IN, EXISTS, DOES_NOT_EXIST];
}

/// A structured label query (Kubernetes' `metav1.LabelSelector`). An empty selector matches
/// every object.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelector {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelectorRequirement {
    pub key: String,
    /// `In`, `NotIn`, `Exists` or `DoesNotExist`.
    pub operator: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

impl LabelSelector {
    /// A selector matching exactly these labels.
    pub fn from_labels(labels: BTreeMap<String, String>) -> Self {
        LabelSelector {
            match_labels: labels,
            match_expressions: Vec::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.match_labels.is_empty() && self.match_expressions.is_empty()
    }

    /// Whether `labels` satisfy every term. A requirement with an unknown operator matches
    /// nothing (validation refuses it before it is stored).
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| {
                let value = labels.get(&r.key);
                match r.operator.as_str() {
                    label_operator::IN => value.is_some_and(|v| r.values.contains(v)),
                    label_operator::NOT_IN => value.is_none_or(|v| !r.values.contains(v)),
                    label_operator::EXISTS => value.is_some(),
                    label_operator::DOES_NOT_EXIST => value.is_none(),
                    _ => false,
                }
            })
    }

    /// Checks keys, values and operators; `path` is the selector's field path.
    pub fn validate(&self, path: &str) -> FieldErrors {
        let mut errs = FieldErrors::new();
        errs.extend(crate::validation::validate_labels(
            &self.match_labels,
            &format!("{path}.matchLabels"),
        ));
        for (i, r) in self.match_expressions.iter().enumerate() {
            let p = format!("{path}.matchExpressions[{i}]");
            if !is_qualified_name(&r.key) {
                errs.push(FieldError::invalid(
                    format!("{p}.key"),
                    format!(
                        "{:?}: {}",
                        r.key,
                        crate::validation::QUALIFIED_NAME_EXPECTED
                    ),
                ));
            }
            match r.operator.as_str() {
                label_operator::IN | label_operator::NOT_IN if r.values.is_empty() => {
                    errs.push(FieldError::required(
                        format!("{p}.values"),
                        format!("operator {} needs at least one value", r.operator),
                    ))
                }
                label_operator::EXISTS | label_operator::DOES_NOT_EXIST if !r.values.is_empty() => {
                    errs.push(FieldError::forbidden(
                        format!("{p}.values"),
                        format!("operator {} takes no values", r.operator),
                    ))
                }
                op if label_operator::ALL.contains(&op) => {}
                op => errs.push(FieldError::not_supported(
                    format!("{p}.operator"),
                    format!("{op:?}: expected one of In, NotIn, Exists, DoesNotExist"),
                )),
            }
            for (j, v) in r.values.iter().enumerate() {
                if !is_label_value(v) {
                    errs.push(FieldError::invalid(
                        format!("{p}.values[{j}]"),
                        format!("{v:?}: {}", crate::validation::LABEL_VALUE_EXPECTED),
                    ));
                }
            }
        }
        errs
    }

    /// The same query as a string [`Selector`].
    pub fn to_selector(&self) -> Selector {
        let mut reqs: Vec<Requirement> = self
            .match_labels
            .iter()
            .map(|(k, v)| Requirement {
                key: k.clone(),
                op: Op::Equals,
                values: vec![v.clone()],
            })
            .collect();
        for r in &self.match_expressions {
            let op = match r.operator.as_str() {
                label_operator::IN => Op::In,
                label_operator::NOT_IN => Op::NotIn,
                label_operator::EXISTS => Op::Exists,
                label_operator::DOES_NOT_EXIST => Op::DoesNotExist,
                // Matches nothing, like `matches` does for an unknown operator.
                _ => Op::In,
            };
            let values = if label_operator::ALL.contains(&r.operator.as_str()) {
                r.values.clone()
            } else {
                Vec::new()
            };
            reqs.push(Requirement {
                key: r.key.clone(),
                op,
                values,
            });
        }
        Selector { requirements: reqs }
    }
}

impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.to_selector().fmt(f)
    }
}

/// Why a selector string was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    #[error("invalid selector {input:?} at {term:?}: {reason}")]
    Invalid {
        input: String,
        term: String,
        reason: String,
    },
    #[error(
        "field {field:?} is not supported by this kind's field selectors (supported: {supported})"
    )]
    UnsupportedField { field: String, supported: String },
}

/// An operator of a parsed selector.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    Equals,
    NotEquals,
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

/// One term of a [`Selector`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requirement {
    pub key: String,
    pub op: Op,
    pub values: Vec<String>,
}

impl Requirement {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match self.op {
            Op::Equals | Op::In => value.is_some_and(|v| self.values.contains(v)),
            Op::NotEquals | Op::NotIn => value.is_none_or(|v| !self.values.contains(v)),
            Op::Exists => value.is_some(),
            Op::DoesNotExist => value.is_none(),
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let first = self.values.first().map(String::as_str).unwrap_or_default();
        match self.op {
            Op::Equals => write!(f, "{}={first}", self.key),
            Op::NotEquals => write!(f, "{}!={first}", self.key),
            Op::In => write!(f, "{} in ({})", self.key, self.values.join(",")),
            Op::NotIn => write!(f, "{} notin ({})", self.key, self.values.join(",")),
            Op::Exists => write!(f, "{}", self.key),
            Op::DoesNotExist => write!(f, "!{}", self.key),
        }
    }
}

/// A parsed label selector string: terms joined by commas, all of which must hold. The empty
/// selector matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector {
    pub requirements: Vec<Requirement>,
}

impl Selector {
    /// The selector that matches every object.
    pub fn everything() -> Self {
        Selector::default()
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Parses `a=b,c!=d,env in (x,y),tier notin (z),!f,g` (and `a==b`).
    pub fn parse(input: &str) -> Result<Selector, SelectorError> {
        let mut requirements = Vec::new();
        for term in split_top_level(input) {
            let term = term.trim();
            if term.is_empty() {
                if input.trim().is_empty() {
                    continue;
                }
                return Err(invalid(input, term, "empty term"));
            }
            requirements.push(parse_term(input, term)?);
        }
        Ok(Selector { requirements })
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Selector {
    type Err = SelectorError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Selector::parse(s)
    }
}

fn invalid(input: &str, term: &str, reason: impl Into<String>) -> SelectorError {
    SelectorError::Invalid {
        input: input.to_string(),
        term: term.to_string(),
        reason: reason.into(),
    }
}

/// Splits on commas outside parentheses.
fn split_top_level(input: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in input.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth <= 0 => {
                out.push(&input[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&input[start..]);
    out
}

fn check_key(input: &str, term: &str, key: &str) -> Result<String, SelectorError> {
    if is_qualified_name(key) {
        Ok(key.to_string())
    } else {
        Err(invalid(
            input,
            term,
            format!(
                "key {key:?}: {}",
                crate::validation::QUALIFIED_NAME_EXPECTED
            ),
        ))
    }
}

fn check_value(input: &str, term: &str, value: &str) -> Result<String, SelectorError> {
    if is_label_value(value) {
        Ok(value.to_string())
    } else {
        Err(invalid(
            input,
            term,
            format!(
                "value {value:?}: {}",
                crate::validation::LABEL_VALUE_EXPECTED
            ),
        ))
    }
}

fn parse_term(input: &str, term: &str) -> Result<Requirement, SelectorError> {
    if let Some(key) = term.strip_prefix('!') {
        return Ok(Requirement {
            key: check_key(input, term, key.trim())?,
            op: Op::DoesNotExist,
            values: Vec::new(),
        });
    }
    for (sym, op) in [("!=", Op::NotEquals), ("==", Op::Equals), ("=", Op::Equals)] {
        if let Some((key, value)) = term.split_once(sym) {
            return Ok(Requirement {
                key: check_key(input, term, key.trim())?,
                op,
                values: vec![check_value(input, term, value.trim())?],
            });
        }
    }
    if let Some(open) = term.find('(') {
        let head = term[..open].trim();
        let (key, word) = head
            .rsplit_once(char::is_whitespace)
            .ok_or_else(|| invalid(input, term, "expected `KEY in (V1,V2)` or `KEY notin (V)`"))?;
        let op = match word {
            "in" => Op::In,
            "notin" => Op::NotIn,
            w => {
                return Err(invalid(
                    input,
                    term,
                    format!("unknown operator {w:?}: expected in or notin"),
                ));
            }
        };
        let list = term[open + 1..]
            .strip_suffix(')')
            .ok_or_else(|| invalid(input, term, "missing closing parenthesis"))?;
        // Kubernetes refuses an empty set: `k in ()` matches nothing and `k notin ()` everything,
        // which is never what the writer meant.
        if list.trim().is_empty() {
            return Err(invalid(
                input,
                term,
                format!("the values set of {word} can't be empty: expected at least one value"),
            ));
        }
        let values = list
            .split(',')
            .map(|v| check_value(input, term, v.trim()))
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(Requirement {
            key: check_key(input, term, key.trim())?,
            op,
            values,
        });
    }
    if term.contains(char::is_whitespace) {
        return Err(invalid(
            input,
            term,
            "expected KEY, !KEY, KEY=VALUE, KEY!=VALUE, KEY in (...) or KEY notin (...)",
        ));
    }
    Ok(Requirement {
        key: check_key(input, term, term)?,
        op: Op::Exists,
        values: Vec::new(),
    })
}

/// One term of a [`FieldSelector`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldRequirement {
    pub field: String,
    /// `true` for `!=`.
    pub negated: bool,
    pub value: String,
}

/// A parsed field selector: `metadata.name=x,spec.nodeName!=y` (also `==`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSelector {
    pub requirements: Vec<FieldRequirement>,
}

impl FieldSelector {
    pub fn parse(input: &str) -> Result<FieldSelector, SelectorError> {
        let mut requirements = Vec::new();
        if input.trim().is_empty() {
            return Ok(FieldSelector { requirements });
        }
        for term in input.split(',') {
            let t = term.trim();
            let (field, negated, value) = if let Some((f, v)) = t.split_once("!=") {
                (f, true, v)
            } else if let Some((f, v)) = t.split_once("==") {
                (f, false, v)
            } else if let Some((f, v)) = t.split_once('=') {
                (f, false, v)
            } else {
                return Err(invalid(
                    input,
                    t,
                    "expected FIELD=VALUE, FIELD==VALUE or FIELD!=VALUE",
                ));
            };
            let field = field.trim();
            if field.is_empty() {
                return Err(invalid(input, t, "empty field name"));
            }
            requirements.push(FieldRequirement {
                field: field.to_string(),
                negated,
                value: value.trim().to_string(),
            });
        }
        Ok(FieldSelector { requirements })
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// The fields the selector names, so a server can check each is supported.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.requirements.iter().map(|r| r.field.as_str())
    }

    /// Whether an object matches, given a lookup of its field values. A field the lookup does
    /// not know fails its term.
    pub fn matches(&self, field: impl Fn(&str) -> Option<String>) -> bool {
        self.requirements.iter().all(|r| match field(&r.field) {
            Some(v) => (v == r.value) != r.negated,
            None => false,
        })
    }

    /// Whether `obj` matches: `metadata.name` and `metadata.namespace` always, other fields
    /// through [`Resource::field`].
    pub fn matches_object<R: Resource>(&self, obj: &R) -> bool {
        self.matches(|f| field_of(obj, f))
    }

    /// Checks that every field named is selectable on kind `R` (asked of a default object, as
    /// every kind answers `Some` for its selectable fields whatever their values).
    pub fn check_supported<R: Resource + Default>(&self) -> Result<(), SelectorError> {
        let probe = R::default();
        for f in self.fields() {
            if field_of(&probe, f).is_none() {
                let mut supported = vec!["metadata.name", "metadata.namespace"];
                supported.extend(
                    COMMON_FIELDS
                        .iter()
                        .copied()
                        .filter(|c| probe.field(c).is_some()),
                );
                return Err(SelectorError::UnsupportedField {
                    field: f.to_string(),
                    supported: supported.join(", "),
                });
            }
        }
        Ok(())
    }
}

/// Fields some kind supports, listed in errors when a field is not supported.
const COMMON_FIELDS: &[&str] = &[
    "spec.nodeName",
    "spec.schedulerName",
    "spec.unschedulable",
    "status.phase",
    "status.successful",
    "involvedObject.name",
    "involvedObject.kind",
    "involvedObject.uid",
    "reason",
    "type",
];

/// The value of a selectable field of `obj`.
pub fn field_of<R: Resource>(obj: &R, field: &str) -> Option<String> {
    match field {
        "metadata.name" => Some(obj.meta().name.clone()),
        "metadata.namespace" => Some(obj.meta().namespace.clone()),
        f => obj.field(f),
    }
}

impl fmt::Display for FieldSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            let op = if r.negated { "!=" } else { "=" };
            write!(f, "{}{op}{}", r.field, r.value)?;
        }
        Ok(())
    }
}
