//! The authorization matrix on the controller: every operation with every role, and with
//! another tenant's token, and the status each must get. (One end-to-end row set also runs
//! through the binary: `crates/strata/tests/it/api.rs`.)

use strata_control::{ControlError, Controller, Principal, Qos, Quota, Role, SizeArg};

use crate::fixture::*;

struct Ids {
    vol: String,
    snap: String,
    empty_tenant: String,
    n: usize,
}

type Call = fn(&Controller, &Principal, &Ids) -> Result<(), ControlError>;

fn ok<T>(r: Result<T, ControlError>) -> Result<(), ControlError> {
    r.map(|_| ())
}

#[test]
fn authorization_matrix() {
    let f = Fixture::new();
    for t in ["acme", "other"] {
        f.c.create_tenant(&f.admin, t, Default::default()).unwrap();
    }
    let roles = [
        ("admin", f.admin.clone()),
        ("tenant-admin", f.token("acme", Role::TenantAdmin)),
        ("member", f.token("acme", Role::Member)),
        ("reader", f.token("acme", Role::Reader)),
        ("other", f.token("other", Role::TenantAdmin)),
    ];
    // "none": no token at all is refused before any operation.
    assert_eq!(status(&f.c.authenticate(""), 200), 401);
    assert_eq!(status(&f.c.authenticate("st_unknown"), 200), 401);
    //           operation                     success admin tadm member reader other
    let rows: &[(&str, u16, Call, [u16; 5])] = &[
        (
            "list pools",
            200,
            |c, p, _| {
                if p.role == Role::Admin {
                    ok(c.metrics(p))
                } else {
                    Err(ControlError::forbidden("pools"))
                }
            },
            [200, 403, 403, 403, 403],
        ),
        (
            "list tenants",
            200,
            |c, p, _| ok(c.list_tenants(p)),
            [200, 200, 200, 200, 200],
        ),
        (
            "get tenant",
            200,
            |c, p, _| ok(c.get_tenant(p, "acme")),
            [200, 200, 200, 200, 404],
        ),
        (
            "create tenant",
            201,
            |c, p, i| ok(c.create_tenant(p, &format!("t{}", i.n), Quota::default())),
            [201, 403, 403, 403, 403],
        ),
        (
            "set quota",
            200,
            |c, p, _| {
                ok(c.set_quota(
                    p,
                    "acme",
                    Quota {
                        volumes: Some(100_000),
                        ..Default::default()
                    },
                ))
            },
            [200, 403, 403, 403, 403],
        ),
        (
            "create token",
            201,
            |c, p, _| ok(c.create_token(p, Some("acme"), Role::Reader)),
            [201, 201, 403, 403, 404],
        ),
        (
            "get volume",
            200,
            |c, p, i| ok(c.get_volume(p, &i.vol)),
            [200, 200, 200, 200, 404],
        ),
        (
            "list snapshots",
            200,
            |c, p, i| ok(c.list_snapshots(p, &i.vol)),
            [200, 200, 200, 200, 404],
        ),
        (
            "get snapshot",
            200,
            |c, p, i| ok(c.get_snapshot(p, &i.snap)),
            [200, 200, 200, 200, 404],
        ),
        (
            "create volume",
            201,
            |c, p, i| ok(c.create_volume(p, new_volume("acme", &format!("new{}", i.n), "1G"))),
            [201, 201, 201, 403, 404],
        ),
        (
            "resize volume",
            200,
            |c, p, i| ok(c.resize_volume(p, &i.vol, SizeArg::Text("2G".into()))),
            [200, 200, 200, 403, 404],
        ),
        (
            "create snapshot",
            201,
            |c, p, i| ok(c.create_snapshot(p, &i.vol, "s2")),
            [201, 201, 201, 403, 404],
        ),
        (
            "clone snapshot",
            201,
            |c, p, i| ok(c.clone_snapshot(p, &i.snap, &format!("c{}", i.n), None)),
            [201, 201, 201, 403, 404],
        ),
        (
            "rollback",
            200,
            |c, p, i| ok(c.rollback(p, &i.vol, &i.snap)),
            [200, 200, 200, 403, 404],
        ),
        (
            "delete snapshot",
            204,
            |c, p, i| c.delete_snapshot(p, &i.snap),
            [204, 204, 204, 403, 404],
        ),
        (
            "delete volume (force)",
            204,
            |c, p, i| c.delete_volume(p, &i.vol, true),
            [204, 204, 204, 403, 404],
        ),
        (
            "list audit",
            200,
            |c, p, _| ok(c.list_audit(p, 10)),
            [200, 403, 403, 403, 403],
        ),
        (
            "set qos",
            200,
            |c, p, i| {
                ok(c.set_qos(
                    p,
                    &i.vol,
                    Qos {
                        iops_limit: Some(1000),
                        ..Default::default()
                    },
                ))
            },
            [200, 200, 200, 403, 404],
        ),
        (
            "volume stats",
            200,
            |c, p, i| ok(c.volume_stats(p, &i.vol)),
            [200, 200, 200, 200, 404],
        ),
        // No NBD server in this fixture: an allowed attach reaches "nbd_unavailable" (503);
        // the daemon's matrix shows the 201.
        (
            "attach",
            201,
            |c, p, i| ok(c.attach(p, &i.vol)),
            [503, 503, 503, 403, 404],
        ),
        (
            "get attachment",
            200,
            |c, p, i| ok(c.attachment(p, &i.vol)),
            [404, 404, 404, 404, 404],
        ),
        (
            "detach",
            204,
            |c, p, i| c.detach(p, &i.vol),
            [404, 404, 404, 403, 404],
        ),
        (
            "metrics",
            200,
            |c, p, _| ok(c.metrics(p)),
            [200, 403, 403, 403, 403],
        ),
        (
            "list switches",
            200,
            |c, p, _| ok(c.list_switches(p)),
            [200, 403, 403, 403, 403],
        ),
        (
            "delete tenant",
            204,
            |c, p, i| c.delete_tenant(p, &i.empty_tenant),
            [204, 403, 403, 403, 403],
        ),
    ];
    let mut n = 0;
    for (what, success, call, want) in rows {
        for (i, (role, p)) in roles.iter().enumerate() {
            n += 1;
            // Fresh fixtures per cell, created by the admin in tenant acme.
            let vol = f.volume("acme", &format!("f{n}"), "1G").unwrap();
            let snap = f.c.create_snapshot(&f.admin, &vol, "s").unwrap().id;
            let empty_tenant = format!("empty{n}");
            f.c.create_tenant(&f.admin, &empty_tenant, Quota::default())
                .unwrap();
            let ids = Ids {
                vol,
                snap,
                empty_tenant,
                n,
            };
            let r = call(&f.c, p, &ids);
            assert_eq!(status(&r, *success), want[i], "{what} as {role}: {r:?}");
        }
    }
}
