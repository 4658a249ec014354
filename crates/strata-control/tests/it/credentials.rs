//! Credentials: token expiry, listing and revocation; tenant NBD sockets and what each shows
//! (a real NBD server and `nbdinfo`); certificates recorded, admitted and revoked.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use strata_block::{BlockDevice, DeviceSpec, MemDevice, Pool};
use strata_control::{Controller, Principal, Role};
use strata_state::RedbStore;
use strata_types::DeviceClass;

use crate::fixture::{code, new_volume, Fixture};

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn tokens_expire_with_their_own_code_and_revoked_ones_are_unknown() {
    let f = Fixture::new();
    f.c.create_tenant(&f.admin, "t1", Default::default())
        .unwrap();
    // Default lifetime: 90 days.
    let (_, rec) =
        f.c.create_token(&f.admin, Some("t1"), Role::Member)
            .unwrap();
    let e = rec.expires.expect("new tokens expire by default");
    assert!(e.abs_diff(now() + 90 * 86_400) <= 2, "{e}");
    // A short one expires, and says so.
    let (secret, _) =
        f.c.create_token_expiring(&f.admin, Some("t1"), Role::Member, Some("1s"))
            .unwrap();
    f.c.authenticate(&secret).unwrap();
    std::thread::sleep(Duration::from_millis(2100));
    assert_eq!(code(f.c.authenticate(&secret)), "token_expired");
    // Revoked: unknown, exactly like a token that never existed.
    let (secret, rec) =
        f.c.create_token(&f.admin, Some("t1"), Role::Reader)
            .unwrap();
    f.c.authenticate(&secret).unwrap();
    f.c.revoke_token(&f.admin, &rec.id).unwrap();
    assert_eq!(code(f.c.authenticate(&secret)), "unauthenticated");
    assert_eq!(code(f.c.authenticate("st_nonsense")), "unauthenticated");
    assert_eq!(code(f.c.revoke_token(&f.admin, &rec.id)), "token_not_found");
}

#[test]
fn expiry_rules_never_for_admins_only_and_bad_durations_name_the_field() {
    let f = Fixture::new();
    f.c.create_tenant(&f.admin, "t1", Default::default())
        .unwrap();
    let ta = f.token("t1", Role::TenantAdmin);
    let (_, rec) =
        f.c.create_token_expiring(&f.admin, Some("t1"), Role::Member, Some("never"))
            .unwrap();
    assert_eq!(rec.expires, None);
    let r =
        f.c.create_token_expiring(&ta, Some("t1"), Role::Member, Some("never"));
    assert_eq!(code(r), "forbidden");
    let (_, rec) =
        f.c.create_token_expiring(&ta, Some("t1"), Role::Member, Some("12h"))
            .unwrap();
    assert!(rec.expires.unwrap().abs_diff(now() + 12 * 3600) <= 2);
    for bad in ["", " ", "soon", "12x", "0d", "-1d", "99999d"] {
        let e =
            f.c.create_token_expiring(&ta, Some("t1"), Role::Member, Some(bad))
                .expect_err(bad);
        assert!(
            matches!(
                e,
                strata_control::ControlError::Invalid {
                    field: "expires",
                    ..
                }
            ),
            "{bad}: {e:?}"
        );
    }
}

#[test]
fn the_bootstrap_token_never_expires_and_is_not_revocable() {
    let f = Fixture::new();
    let list = f.c.list_tokens(&f.admin, None).unwrap();
    let boot = list.iter().find(|t| t.bootstrap).expect("bootstrap listed");
    assert_eq!(boot.id, f.admin.token_id);
    assert_eq!(boot.expires, None);
    assert_eq!(code(f.c.revoke_token(&f.admin, &boot.id)), "forbidden");
}

#[test]
fn listing_and_revoking_follow_the_roles_and_never_show_secrets() {
    let f = Fixture::new();
    for t in ["t1", "t2"] {
        f.c.create_tenant(&f.admin, t, Default::default()).unwrap();
    }
    let ta = f.token("t1", Role::TenantAdmin);
    let m1 = f.token("t1", Role::Member);
    let r1 = f.token("t1", Role::Reader);
    let m2 = f.token("t2", Role::Member);
    let ids = |p: &Principal, t: Option<&str>| -> Vec<String> {
        let mut v: Vec<String> =
            f.c.list_tokens(p, t)
                .unwrap()
                .into_iter()
                .map(|t| t.id)
                .collect();
        v.sort();
        v
    };
    let mut t1 = vec![
        ta.token_id.clone(),
        m1.token_id.clone(),
        r1.token_id.clone(),
    ];
    t1.sort();
    assert_eq!(ids(&f.admin, Some("t1")), t1);
    assert_eq!(ids(&f.admin, None).len(), 5, "bootstrap + 4");
    assert_eq!(
        ids(&ta, None),
        t1,
        "a tenant admin sees its tenant's tokens"
    );
    assert_eq!(ids(&m1, None), vec![m1.token_id.clone()], "a member itself");
    assert_eq!(ids(&r1, None), vec![r1.token_id.clone()], "a reader itself");
    assert_eq!(code(f.c.list_tokens(&ta, Some("t2"))), "tenant_not_found");
    // No secret and no hash in what a listing serializes to.
    let text = serde_json::to_string(&f.c.list_tokens(&f.admin, None).unwrap()).unwrap();
    assert!(
        !text.contains("\"st_") && !text.contains("\"token\""),
        "{text}"
    );
    // last_used is recorded, at most once a minute.
    let first =
        f.c.list_tokens(&f.admin, Some("t1"))
            .unwrap()
            .into_iter()
            .find(|t| t.id == m1.token_id)
            .unwrap()
            .last_used
            .expect("authenticated once by the fixture");
    assert!(first.abs_diff(now()) <= 2);
    // Revocation scopes: outside them a token is not found.
    assert_eq!(code(f.c.revoke_token(&ta, &m2.token_id)), "token_not_found");
    assert_eq!(code(f.c.revoke_token(&m1, &r1.token_id)), "token_not_found");
    f.c.revoke_token(&r1, &r1.token_id).unwrap();
    f.c.revoke_token(&ta, &m1.token_id).unwrap();
    assert_eq!(ids(&ta, None), vec![ta.token_id.clone()]);
}

#[test]
fn last_used_is_written_at_most_once_a_minute() {
    let f = Fixture::new();
    f.c.create_tenant(&f.admin, "t1", Default::default())
        .unwrap();
    let (secret, rec) =
        f.c.create_token(&f.admin, Some("t1"), Role::Member)
            .unwrap();
    let seen = |f: &Fixture| {
        f.c.list_tokens(&f.admin, None)
            .unwrap()
            .into_iter()
            .find(|t| t.id == rec.id)
            .unwrap()
            .last_used
    };
    assert_eq!(seen(&f), None);
    f.c.authenticate(&secret).unwrap();
    let first = seen(&f).expect("recorded");
    std::thread::sleep(Duration::from_millis(1100));
    f.c.authenticate(&secret).unwrap();
    assert_eq!(
        seen(&f),
        Some(first),
        "a second use within a minute writes nothing"
    );
}

/// A controller over a memory pool with a real NBD server connected: tenant sockets in
/// `DIR/sockets`, the admin socket `DIR/nbd.sock`.
struct Served {
    c: Arc<Controller>,
    admin: Principal,
    nbd: Arc<strata_nbd::NbdServer>,
    dir: tempfile::TempDir,
}

impl Served {
    fn new() -> Served {
        let dir = tempfile::tempdir().unwrap();
        let dev = MemDevice::new(256 << 20, "m");
        drop(
            Pool::create(vec![DeviceSpec {
                device: dev.clone(),
                class: DeviceClass::Ssd,
            }])
            .unwrap(),
        );
        let pool = Pool::open(vec![dev as Arc<dyn BlockDevice>]).unwrap();
        let store = RedbStore::open(dir.path().join("s.redb")).unwrap();
        let c = Arc::new(Controller::open(Box::new(store), pool.clone()).unwrap());
        let secret = c.bootstrap_admin().unwrap().unwrap();
        let admin = c.authenticate(&secret).unwrap();
        let exports = c.exports();
        let cfg = strata_nbd::ServerConfig {
            filter: Some(strata_nbd::ExportFilter(Arc::new(move |n: &str| {
                exports.read().contains(n)
            }))),
            authorize: Some(c.nbd_authorizer()),
            admit: Some(c.nbd_admit()),
            ..Default::default()
        };
        let nbd = Arc::new(strata_nbd::NbdServer::with_config(pool, cfg));
        let sock = dir.path().join("nbd.sock");
        nbd.serve_unix(&sock).unwrap();
        c.set_nbd_socket(sock);
        std::fs::create_dir(dir.path().join("sockets")).unwrap();
        c.connect_nbd(nbd.clone(), dir.path().join("sockets"))
            .unwrap();
        Served { c, admin, nbd, dir }
    }

    fn attached(&self, tenant: &str, name: &str) -> (String, String) {
        let v = self
            .c
            .create_volume(&self.admin, new_volume(tenant, name, "4M"))
            .unwrap();
        let a = self.c.attach(&self.admin, &v.id).unwrap();
        (v.id, a.uri)
    }

    fn socket(&self, t: &str) -> PathBuf {
        self.dir.path().join("sockets").join(format!("{t}.sock"))
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.nbd.shutdown();
    }
}

/// `nbdinfo --list` of a socket: the export names it shows.
fn list(sock: &Path) -> Vec<String> {
    let o = Command::new("nbdinfo")
        .args(["--list", "--json"])
        .arg(format!("nbd+unix:///?socket={}", sock.display()))
        .output()
        .expect("nbdinfo is installed");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let mut names: Vec<String> = v["exports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["export-name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

fn size_of(uri: &str) -> Result<String, String> {
    let o = Command::new("nbdinfo")
        .arg("--size")
        .arg(uri)
        .output()
        .unwrap();
    if o.status.success() {
        Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&o.stderr).to_string())
    }
}

#[test]
fn a_tenant_socket_lists_and_opens_only_its_tenants_exports() {
    let s = Served::new();
    for t in ["acme", "beta"] {
        s.c.create_tenant(&s.admin, t, Default::default()).unwrap();
    }
    let (a1, uri_a) = s.attached("acme", "d1");
    let (b1, uri_b) = s.attached("beta", "d1");
    // An unattached volume is listed nowhere.
    s.c.create_volume(&s.admin, new_volume("acme", "quiet", "4M"))
        .unwrap();
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let md = std::fs::metadata(s.socket("acme")).unwrap();
    assert!(md.file_type().is_socket());
    assert_eq!(md.permissions().mode() & 0o777, 0o600);
    assert!(
        uri_a.ends_with(&format!("socket={}", s.socket("acme").display())),
        "{uri_a}"
    );
    assert_eq!(list(&s.socket("acme")), vec![a1.clone()]);
    assert_eq!(list(&s.socket("beta")), vec![b1.clone()]);
    let mut all = vec![a1.clone(), b1.clone()];
    all.sort();
    assert_eq!(
        list(&s.dir.path().join("nbd.sock")),
        all,
        "the admin socket"
    );
    // Own export opens; the other tenant's through this socket does not.
    assert_eq!(size_of(&uri_a).unwrap(), (4u64 << 20).to_string());
    let cross = format!("nbd+unix:///{b1}?socket={}", s.socket("acme").display());
    assert!(
        size_of(&cross).is_err(),
        "beta's export opened through acme's socket"
    );
    assert!(size_of(&uri_b).is_ok());
    let admin_b = format!(
        "nbd+unix:///{b1}?socket={}",
        s.dir.path().join("nbd.sock").display()
    );
    assert!(
        size_of(&admin_b).is_ok(),
        "the admin socket opens every export"
    );
}

#[test]
fn tenant_sockets_follow_the_tenant_and_its_owner() {
    let s = Served::new();
    s.c.create_tenant(&s.admin, "acme", Default::default())
        .unwrap();
    assert!(s.socket("acme").exists(), "created with the tenant");
    let owner = strata_control::SocketOwner {
        uid: 4242,
        gid: 4343,
    };
    let t = s.c.set_socket_owner(&s.admin, "acme", Some(owner)).unwrap();
    assert_eq!(t.socket_owner, Some(owner));
    assert_eq!(
        s.c.get_tenant(&s.admin, "acme").unwrap().socket_owner,
        Some(owner)
    );
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::metadata(s.socket("acme")).unwrap();
    assert_eq!((md.uid(), md.gid()), (4242, 4343));
    let ta = {
        let (sec, _) =
            s.c.create_token(&s.admin, Some("acme"), Role::TenantAdmin)
                .unwrap();
        s.c.authenticate(&sec).unwrap()
    };
    assert_eq!(code(s.c.set_socket_owner(&ta, "acme", None)), "forbidden");
    s.c.delete_tenant(&s.admin, "acme").unwrap();
    assert!(!s.socket("acme").exists(), "removed with the tenant");
}

#[test]
fn certificates_are_recorded_admitted_until_revoked() {
    let s = Served::new();
    let pki =
        Arc::new(strata_control::pki::Pki::load_or_create(&s.dir.path().join("tls")).unwrap());
    s.c.set_nbd_tcp("127.0.0.1:1".into(), pki);
    for t in ["acme", "beta"] {
        s.c.create_tenant(&s.admin, t, Default::default()).unwrap();
    }
    let (id, _) = s.attached("acme", "d1");
    let (_, creds) = s.c.attach_tcp(&s.admin, &id).unwrap();
    let (_, creds2) = s.c.attach_tcp(&s.admin, &id).unwrap();
    assert_ne!(
        creds.serial, creds2.serial,
        "a fresh certificate per attach"
    );
    assert!(creds.not_after.abs_diff(now() + 30 * 86_400) <= 2);
    let peer = |t: &str, serial: &str| strata_nbd::PeerInfo {
        identity: Some(t.into()),
        cert_serial: Some(serial.into()),
        not_after: None,
        source: None,
    };
    assert!(s.c.certificate_admitted(&peer("acme", &creds.serial)));
    assert!(
        !s.c.certificate_admitted(&peer("beta", &creds.serial)),
        "wrong tenant"
    );
    assert!(
        !s.c.certificate_admitted(&peer("acme", "01ab")),
        "never issued"
    );
    let listed = s.c.list_certificates(&s.admin, "acme").unwrap();
    assert_eq!(listed.len(), 2);
    // Detach revokes nothing.
    s.c.detach(&s.admin, &id).unwrap();
    assert!(s.c.certificate_admitted(&peer("acme", &creds.serial)));
    let member = {
        let (sec, _) =
            s.c.create_token(&s.admin, Some("acme"), Role::Member)
                .unwrap();
        s.c.authenticate(&sec).unwrap()
    };
    assert_eq!(code(s.c.revoke_certificates(&member, "acme")), "forbidden");
    let r = s.c.revoke_certificates(&s.admin, "acme").unwrap();
    assert_eq!(r.revoked, 2);
    assert!(!s.c.certificate_admitted(&peer("acme", &creds.serial)));
    assert!(!s.c.certificate_admitted(&peer("acme", &creds2.serial)));
    assert_eq!(
        s.c.revoke_certificates(&s.admin, "acme").unwrap().revoked,
        0
    );
}
