//! The error contract: every code the API can answer with is registered, and the OpenAPI
//! document lists every registered code.

use std::collections::BTreeSet;

use strata_types::ErrorCode;

#[test]
fn every_registered_code_is_in_the_openapi_error_schema() {
    let doc: serde_json::Value =
        serde_json::from_str(strata_control::api::OPENAPI).expect("the document is JSON");
    let listed: BTreeSet<&str> = doc["components"]["schemas"]["Error"]["properties"]["error"]
        ["properties"]["code"]["enum"]
        .as_array()
        .expect("the error code is an enum")
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    let registered: BTreeSet<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
    assert_eq!(listed, registered);
}

#[test]
fn controller_errors_map_to_registered_codes_with_their_status() {
    use strata_control::{api, ControlError, InUse, Resource, Service};
    let cases: Vec<(ControlError, &str, u16)> = vec![
        (ControlError::Unauthenticated, "unauthenticated", 401),
        (ControlError::forbidden("x"), "forbidden", 403),
        (
            ControlError::not_found(Resource::Volume, "v"),
            "volume_not_found",
            404,
        ),
        (
            ControlError::not_found(Resource::Tenant, "t"),
            "tenant_not_found",
            404,
        ),
        (
            ControlError::not_found(Resource::Port, "p"),
            "port_not_found",
            404,
        ),
        (
            ControlError::exists(Resource::Volume, "v"),
            "volume_exists",
            409,
        ),
        (
            ControlError::exists(Resource::Switch, "s"),
            "switch_exists",
            409,
        ),
        (ControlError::invalid("size", "x"), "invalid_argument", 400),
        (
            ControlError::QuotaExceeded {
                tenant: "t".into(),
                message: "x".into(),
            },
            "quota_exceeded",
            409,
        ),
        (
            ControlError::InUse {
                what: InUse::TenantNotEmpty,
                message: "x".into(),
            },
            "tenant_not_empty",
            409,
        ),
        (ControlError::Busy("x".into()), "busy", 409),
        (
            ControlError::Unavailable {
                service: Service::NbdTcp,
                message: "x".into(),
            },
            "nbd_tcp_unavailable",
            409,
        ),
        (
            strata_block::AdminError::MetadataFull.into(),
            "out_of_space",
            507,
        ),
        (
            strata_state::StoreError::Backend("x".into()).into(),
            "store_unavailable",
            503,
        ),
        (
            strata_dataplane::DataplaneError::Stopped.into(),
            "dataplane_stopped",
            503,
        ),
        (ControlError::internal("x"), "internal", 500),
    ];
    for (e, code, status) in cases {
        let c = api::code_of(&e);
        assert_eq!((c.as_str(), c.http_status()), (code, status), "{e}");
        assert!(ErrorCode::ALL.contains(&c));
    }
    let e = api::ApiError::from(ControlError::exists(Resource::Snapshot, "s"));
    assert_eq!(e.field, Some("name"));
}

/// The switch's own codes and the registry agree: the API answers with the code the switch
/// names, mapped by variant.
#[test]
fn switch_errors_keep_the_switchs_own_codes() {
    use strata_dataplane::DataplaneError;
    let flows = [
        "priority=1,nonsense=1,actions=drop",
        "priority=1,in_port",
        "priority=1,actions=frobnicate",
        "priority=1",
        "priority=1,tcp_dst=80,actions=drop",
        "table=1,actions=goto_table:0",
        "priority=1,actions=output:nosuchport",
        "priority=1,dl_vlan=5000,actions=drop",
    ];
    let mut seen = 0;
    for f in flows {
        let Err(e) = strata_net::parse_flow(f, None) else {
            continue;
        };
        let want = e.code();
        let got = strata_control::api::code_of(&DataplaneError::from(e).into());
        assert_eq!(got.as_str(), want, "{f}");
        assert_eq!(got.http_status(), 400, "{f}");
        seen += 1;
    }
    assert!(seen >= 4, "only {seen} flows failed to parse");
}
