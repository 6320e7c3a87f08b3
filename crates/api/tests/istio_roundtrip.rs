//! Property tests: generated VirtualServices, DestinationRules, ServiceEntries,
//! AuthorizationPolicies and PeerAuthentications, written out as YAML (both JSON flow style,
//! which is YAML 1.2, and block style from a small emitter below), load back through
//! [`parse_str`] equal to what was written, and writing the loaded value again and loading
//! it once more changes nothing.
//!
//! The generators only build valid resources (the loader drops invalid ones), while still
//! setting most of the typed fields, so that every serde rename, alias and enum spelling is
//! exercised in both directions.

// The generators live beside this file; a test crate's root resolves modules from `tests/`.
#[path = "istio_roundtrip/common.rs"]
mod common;
#[path = "istio_roundtrip/networking.rs"]
mod networking;
#[path = "istio_roundtrip/security.rs"]
mod security;
#[path = "istio_roundtrip/virtual_service.rs"]
mod virtual_service;

use std::path::Path;

use proptest::prelude::*;
use serde_json::Value;
use trellis_api::load::parse_str;
use trellis_api::resources::Resource;

use networking::{destination_rule, service_entry};
use security::{authorization_policy, peer_authentication};
use virtual_service::virtual_service;

// ---------------------------------------------------------------------------------------
// A block-style YAML emitter for JSON values. Strings and keys are always double-quoted with
// JSON escapes, which YAML's double-quoted style shares, so no plain scalar can be misread as
// a number, a boolean or null.

fn quoted(s: &str) -> String {
    Value::String(s.to_owned()).to_string()
}

fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::Null => Some("null".into()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => Some(quoted(s)),
        Value::Array(a) if a.is_empty() => Some("[]".into()),
        Value::Object(o) if o.is_empty() => Some("{}".into()),
        Value::Array(_) | Value::Object(_) => None,
    }
}

fn emit(value: &Value, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (key, item) in map {
                match scalar(item) {
                    Some(text) => out.push_str(&format!("{pad}{}: {text}\n", quoted(key))),
                    None => {
                        out.push_str(&format!("{pad}{}:\n", quoted(key)));
                        emit(item, indent + 2, out);
                    }
                }
            }
        }
        Value::Array(items) if !items.is_empty() => {
            for item in items {
                match scalar(item) {
                    Some(text) => out.push_str(&format!("{pad}- {text}\n")),
                    None => {
                        // The item's first line goes after the dash; the rest keeps the indent.
                        let mut nested = String::new();
                        emit(item, indent + 2, &mut nested);
                        let body = nested.trim_start();
                        out.push_str(&format!("{pad}- {body}"));
                    }
                }
            }
        }
        other => {
            let text = scalar(other).unwrap_or_default();
            out.push_str(&format!("{pad}{text}\n"));
        }
    }
}

fn to_block_yaml(value: &Value) -> String {
    let mut out = String::new();
    emit(value, 0, &mut out);
    out
}

// ---------------------------------------------------------------------------------------
// The property.

/// Loads `text`, which must hold exactly one resource and no error.
fn load_one(text: &str) -> Result<Resource, TestCaseError> {
    let (resources, diagnostics) = parse_str(Path::new("generated.yaml"), text);
    let errors: Vec<String> = diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(ToString::to_string)
        .collect();
    prop_assert!(errors.is_empty(), "{}\n{text}", errors.join("\n"));
    prop_assert_eq!(resources.len(), 1, "{}", text);
    Ok(resources
        .into_iter()
        .next()
        .map(|l| l.value)
        .unwrap_or_else(|| unreachable!()))
}

fn round_trips(resource: &Resource) -> Result<(), TestCaseError> {
    let json = serde_json::to_value(resource).map_err(|e| TestCaseError::fail(e.to_string()))?;
    for text in [json.to_string(), to_block_yaml(&json)] {
        let loaded = load_one(&text)?;
        prop_assert_eq!(&loaded, resource, "{}", text);
        let again =
            serde_json::to_value(&loaded).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&again, &json);
        prop_assert_eq!(&load_one(&to_block_yaml(&again))?, &loaded);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn virtual_services_round_trip(resource in virtual_service()) {
        round_trips(&resource)?;
    }

    #[test]
    fn destination_rules_round_trip(resource in destination_rule()) {
        round_trips(&resource)?;
    }

    #[test]
    fn service_entries_round_trip(resource in service_entry()) {
        round_trips(&resource)?;
    }

    #[test]
    fn authorization_policies_round_trip(resource in authorization_policy()) {
        round_trips(&resource)?;
    }

    #[test]
    fn peer_authentications_round_trip(resource in peer_authentication()) {
        round_trips(&resource)?;
    }
}

#[test]
fn the_block_emitter_writes_plain_yaml() {
    let value = serde_json::json!({"a": [1, {"b": "x", "c": []}], "d": {}, "e": "true"});
    assert_eq!(
        to_block_yaml(&value),
        "\"a\":\n  - 1\n  - \"b\": \"x\"\n    \"c\": []\n\"d\": {}\n\"e\": \"true\"\n"
    );
}
