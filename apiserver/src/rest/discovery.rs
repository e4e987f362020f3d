//! API discovery, as kubectl and client libraries read it before any other call: `/api` (the
//! core group's versions), `/apis` (every other group), and one resource list per group
//! version (`/api/v1`, `/apis/batch/v1`), each resource with its verbs, short names and
//! subresources. Generated from the kinds the server serves, so what discovery says is what a
//! request finds.
//!
//! The legacy (unaggregated) documents only: a client that asks for aggregated discovery
//! (`as=APIGroupDiscoveryList`) receives `application/json` and falls back to them, as it does
//! against any server that predates it.

use drover_api::authentication::TokenReview;
use drover_api::core::Pod;
use drover_api::error::Reason;
use drover_api::resource::{KindInfo, all_kinds};
use drover_api::{Resource, Status};
use serde_json::{Value, json};

/// What a discovery path asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Discovery<'a> {
    /// `/api`
    CoreVersions,
    /// `/apis`
    Groups,
    /// `/apis/{group}`
    Group(&'a str),
    /// `/api/v1`, `/apis/{group}/{version}`
    Resources { group: &'a str, version: &'a str },
}

impl<'a> Discovery<'a> {
    /// The discovery document a path names; `None` for a path that names a resource.
    pub fn of_path(path: &'a str) -> Option<Discovery<'a>> {
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        Some(match segs.as_slice() {
            ["api"] => Discovery::CoreVersions,
            ["apis"] => Discovery::Groups,
            ["api", version] => Discovery::Resources { group: "", version },
            ["apis", group] => Discovery::Group(group),
            ["apis", group, version] => Discovery::Resources { group, version },
            _ => return None,
        })
    }

    /// The document, or `NotFound` for a group or version the server does not serve.
    pub fn document(&self, server_address: &str) -> Result<Value, Status> {
        let kinds = served_kinds();
        match *self {
            Discovery::CoreVersions => Ok(json!({
                "kind": "APIVersions",
                "versions": versions_of(&kinds, ""),
                "serverAddressByClientCIDRs": [
                    {"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}
                ],
            })),
            Discovery::Groups => {
                let mut groups: Vec<&str> = kinds
                    .iter()
                    .map(|k| k.group)
                    .filter(|g| !g.is_empty())
                    .collect();
                groups.sort_unstable();
                groups.dedup();
                Ok(json!({
                    "kind": "APIGroupList",
                    "apiVersion": "v1",
                    "groups": groups.iter().map(|g| group_document(&kinds, g)).collect::<Vec<_>>(),
                }))
            }
            Discovery::Group(group) => {
                if group.is_empty() || !kinds.iter().any(|k| k.group == group) {
                    return Err(not_served(&format!("group {group:?}")));
                }
                let mut doc = group_document(&kinds, group);
                doc["kind"] = "APIGroup".into();
                doc["apiVersion"] = "v1".into();
                Ok(doc)
            }
            Discovery::Resources { group, version } => {
                let served: Vec<&KindInfo> = kinds
                    .iter()
                    .filter(|k| k.group == group && k.version == version)
                    .collect();
                let group_version = drover_api::resource::api_version_of(group, version);
                if served.is_empty() {
                    return Err(not_served(&format!("group version {group_version:?}")));
                }
                let mut resources = Vec::new();
                for k in served {
                    resources.extend(resources_of(k));
                }
                Ok(json!({
                    "kind": "APIResourceList",
                    "apiVersion": "v1",
                    "groupVersion": group_version,
                    "resources": resources,
                }))
            }
        }
    }
}

fn not_served(what: &str) -> Status {
    Status::new(
        Reason::NotFound,
        format!("the server could not find the requested resource: {what} is not served"),
    )
}

/// Every kind a request can reach: the stored ones and TokenReview (answered, never stored).
fn served_kinds() -> Vec<KindInfo> {
    let mut kinds = all_kinds();
    kinds.push(TokenReview::info());
    kinds
}

fn versions_of(kinds: &[KindInfo], group: &str) -> Vec<&'static str> {
    let mut versions: Vec<&'static str> = kinds
        .iter()
        .filter(|k| k.group == group)
        .map(|k| k.version)
        .collect();
    versions.sort_unstable();
    versions.dedup();
    versions
}

/// A group with its versions; the one version served is the preferred one.
fn group_document(kinds: &[KindInfo], group: &str) -> Value {
    let versions: Vec<Value> = versions_of(kinds, group)
        .into_iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    json!({
        "name": group,
        "versions": versions,
        "preferredVersion": versions.first().cloned().unwrap_or(Value::Null),
    })
}

/// A kind's entry and its subresources' entries, with the verbs the server answers.
fn resources_of(k: &KindInfo) -> Vec<Value> {
    if k.kind == TokenReview::KIND {
        return vec![entry(k, k.plural, k.singular, &["create"])];
    }
    let mut out = vec![entry(
        k,
        k.plural,
        k.singular,
        &[
            "create", "delete", "get", "list", "patch", "update", "watch",
        ],
    )];
    let main = &mut out[0];
    if !k.short_names.is_empty() {
        main["shortNames"] = json!(k.short_names);
    }
    // kubectl's `get all`: the workloads a user runs.
    if k.kind == Pod::KIND || k.kind == drover_api::batch::Job::KIND {
        main["categories"] = json!(["all"]);
    }
    if k.has_status {
        out.push(entry(
            k,
            &format!("{}/status", k.plural),
            "",
            &["get", "patch", "update"],
        ));
    }
    if k.kind == Pod::KIND {
        out.push(entry(k, "pods/binding", "", &["create"]));
    }
    out
}

fn entry(k: &KindInfo, name: &str, singular: &str, verbs: &[&str]) -> Value {
    json!({
        "name": name,
        "singularName": singular,
        "namespaced": k.namespaced,
        "kind": k.kind,
        "verbs": verbs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_their_document() {
        assert_eq!(Discovery::of_path("/api"), Some(Discovery::CoreVersions));
        assert_eq!(Discovery::of_path("/apis/"), Some(Discovery::Groups));
        assert_eq!(
            Discovery::of_path("/api/v1"),
            Some(Discovery::Resources {
                group: "",
                version: "v1"
            })
        );
        assert_eq!(
            Discovery::of_path("/apis/batch"),
            Some(Discovery::Group("batch"))
        );
        assert_eq!(Discovery::of_path("/api/v1/pods"), None);
        assert_eq!(Discovery::of_path("/apis/batch/v1/jobs"), None);
    }

    #[test]
    fn every_kind_is_listed_under_its_group_version() {
        let groups = Discovery::Groups.document("127.0.0.1:6443").unwrap();
        let names: Vec<&str> = groups["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["name"].as_str().unwrap())
            .collect();
        for k in served_kinds() {
            if k.group.is_empty() {
                let core = Discovery::CoreVersions.document("x").unwrap();
                assert_eq!(core["versions"], json!([k.version]));
            } else {
                assert!(names.contains(&k.group), "{} missing from /apis", k.group);
            }
            let list = Discovery::Resources {
                group: k.group,
                version: k.version,
            }
            .document("x")
            .unwrap();
            let entry = list["resources"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["name"] == k.plural)
                .unwrap_or_else(|| panic!("{} missing from its resource list", k.plural));
            assert_eq!(entry["kind"], k.kind);
            assert_eq!(entry["namespaced"], k.namespaced);
        }
    }

    #[test]
    fn pods_have_their_subresources_and_short_name() {
        let v1 = Discovery::Resources {
            group: "",
            version: "v1",
        }
        .document("x")
        .unwrap();
        let names: Vec<&str> = v1["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert!(names.contains(&"pods/status"), "{names:?}");
        assert!(names.contains(&"pods/binding"), "{names:?}");
        let pods = v1["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "pods")
            .unwrap();
        assert_eq!(pods["shortNames"], json!(["po"]));
        assert_eq!(pods["categories"], json!(["all"]));
    }

    #[test]
    fn unknown_groups_and_versions_are_not_found() {
        for d in [
            Discovery::Group("nope.example.com"),
            Discovery::Resources {
                group: "batch",
                version: "v9",
            },
            Discovery::Resources {
                group: "",
                version: "v2",
            },
        ] {
            let e = d.document("x").unwrap_err();
            assert_eq!(e.code, 404, "{d:?}");
        }
    }
}
