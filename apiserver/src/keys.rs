//! Storage keys: `/registry/<group>/<plural>/<namespace>/<name>` for namespaced kinds and
//! `/registry/<group>/<plural>/<name>` for cluster-scoped ones (`core` is the core group).

use drover_api::KindInfo;

const ROOT: &str = "/registry/";

fn group_segment(group: &str) -> &str {
    if group.is_empty() { "core" } else { group }
}

/// The prefix of every object of a kind.
pub fn kind_prefix(info: &KindInfo) -> String {
    format!("{ROOT}{}/{}/", group_segment(info.group), info.plural)
}

/// The prefix of a kind's objects in one namespace.
pub fn namespace_prefix(info: &KindInfo, namespace: &str) -> String {
    format!("{}{namespace}/", kind_prefix(info))
}

/// The key of one object.
pub fn object_key(info: &KindInfo, namespace: &str, name: &str) -> String {
    if info.namespaced {
        format!("{}{namespace}/{name}", kind_prefix(info))
    } else {
        format!("{}{name}", kind_prefix(info))
    }
}

/// The prefix of every object.
pub fn root() -> &'static str {
    ROOT
}

/// `(group, plural)` of a key.
pub fn parse_kind(key: &[u8]) -> Option<(&str, &str)> {
    let s = std::str::from_utf8(key).ok()?.strip_prefix(ROOT)?;
    let mut parts = s.splitn(3, '/');
    let group = parts.next()?;
    let plural = parts.next()?;
    Some((if group == "core" { "" } else { group }, plural))
}

#[cfg(test)]
mod tests {
    use super::*;
    use drover_api::Resource;
    use drover_api::core::Namespace;

    #[test]
    fn keys_round_trip() {
        let info = Namespace::info();
        let k = object_key(&info, "", "default");
        assert_eq!(k, "/registry/core/namespaces/default");
        assert_eq!(parse_kind(k.as_bytes()), Some(("", "namespaces")));
        assert_eq!(
            parse_kind(b"/registry/batch/jobs/ns/x"),
            Some(("batch", "jobs"))
        );
        assert_eq!(parse_kind(b"/other"), None);
    }
}
