//! v1 Event: a record of something that happened to an object (scheduled, pulled, failed,
//! preempted), for `drover describe` and `drover get events`.

use serde::{Deserialize, Serialize};

use crate::coordination::{MicroTime, micro_time};
use crate::error::{FieldError, FieldErrors};
use crate::meta::{ObjectMeta, ObjectReference, Time};
use crate::resource::Resource;
use crate::validation::{check_enum, check_min};

/// Values of an event's `type`.
pub mod event_type {
    pub const NORMAL: &str = "Normal";
    pub const WARNING: &str = "Warning";
    pub const ALL: &[&str] = &[NORMAL, WARNING];
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Event {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// The object the event is about.
    #[serde(default)]
    pub involved_object: ObjectReference,
    /// A short CamelCase reason (`Scheduled`, `FailedScheduling`, `Preempted`, ...).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<EventSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_timestamp: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_timestamp: Option<Time>,
    /// How many times it happened between the first and the last timestamp.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub count: i32,
    /// `Normal` or `Warning`.
    #[serde(default, rename = "type", skip_serializing_if = "String::is_empty")]
    pub type_: String,
    #[serde(default, with = "micro_time", skip_serializing_if = "Option::is_none")]
    pub event_time: Option<MicroTime>,
    /// Accepted for compatibility (event series).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub series: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub related: Option<ObjectReference>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reporting_component: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reporting_instance: String,
}

fn is_zero(v: &i32) -> bool {
    *v == 0
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EventSource {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub component: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host: String,
}

impl Resource for Event {
    const GROUP: &'static str = "";
    const VERSION: &'static str = "v1";
    const KIND: &'static str = "Event";
    const PLURAL: &'static str = "events";
    const SINGULAR: &'static str = "event";
    const SHORT_NAMES: &'static [&'static str] = &["ev"];
    const NAMESPACED: bool = true;

    crate::impl_resource_meta!(Event);

    fn validate(&self) -> Result<(), FieldErrors> {
        let mut errs = FieldErrors::new();
        if let Err(e) = crate::validation::validate_object_meta(&self.metadata, true) {
            errs.extend(e);
        }
        if self.involved_object.name.is_empty() {
            errs.push(FieldError::required(
                "involvedObject.name",
                "expected the name of the object the event is about",
            ));
        }
        check_enum(&mut errs, "type", &self.type_, event_type::ALL, true);
        check_min(&mut errs, "count", Some(self.count), 0);
        errs.into_result()
    }

    fn spec_differs(&self, other: &Self) -> bool {
        self.involved_object != other.involved_object
            || self.reason != other.reason
            || self.message != other.message
    }

    fn field(&self, path: &str) -> Option<String> {
        match path {
            "involvedObject.name" => Some(self.involved_object.name.clone()),
            "involvedObject.kind" => Some(self.involved_object.kind.clone()),
            "involvedObject.uid" => Some(self.involved_object.uid.clone()),
            "involvedObject.namespace" => Some(self.involved_object.namespace.clone()),
            "reason" => Some(self.reason.clone()),
            "type" => Some(self.type_.clone()),
            _ => None,
        }
    }
}
