//! The test-only fault point of job slices: `STRATA_TEST_JOB_SLICE_FAIL=KIND[#N][:crash]` in
//! the daemon's environment fails the N-th step of that kind in a saga before its work (or
//! aborts the daemon there). Only tests set it; unset, every check is one load of `None`.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use crate::error::ControlError;

/// The environment variable of the test-only fault point (see the module docs).
pub const FAULT_ENV: &str = "STRATA_TEST_JOB_SLICE_FAIL";

/// The test-only fault (see the module docs).
struct Fault {
    kind: String,
    nth: u32,
    crash: bool,
}

static FAULT: LazyLock<Option<Fault>> = LazyLock::new(|| {
    let v = std::env::var(FAULT_ENV).ok()?;
    let (v, crash) = match v.strip_suffix(":crash") {
        Some(v) => (v.to_string(), true),
        None => (v, false),
    };
    let (kind, nth) = match v.split_once('#') {
        Some((k, n)) => (k.to_string(), n.parse().ok()?),
        None => (v, 1),
    };
    tracing::warn!(
        kind = %kind,
        nth,
        crash,
        "{FAULT_ENV} is set: job slice steps fail on purpose (tests only)"
    );
    Some(Fault { kind, nth, crash })
});

/// Counts the steps of a saga by kind and fails the one the fault names.
#[derive(Default)]
pub(crate) struct Faults {
    seen: BTreeMap<&'static str, u32>,
}

impl Faults {
    pub(crate) fn hit(&mut self, kind: &'static str) -> Option<ControlError> {
        let f = FAULT.as_ref()?;
        let n = self.seen.entry(kind).or_default();
        *n += 1;
        if f.kind != kind || *n != f.nth {
            return None;
        }
        if f.crash {
            tracing::error!(kind, nth = f.nth, "{FAULT_ENV}: crashing on purpose");
            std::process::abort();
        }
        Some(injected(kind, f.nth))
    }
}

fn injected(kind: &str, nth: u32) -> ControlError {
    ControlError::internal(format!(
        "injected fault: job slice step {kind} #{nth} ({FAULT_ENV})"
    ))
}

/// Fails the create's `record` step when the fault names it.
pub(crate) fn record_fault() -> Result<(), ControlError> {
    match FAULT.as_ref() {
        Some(f) if f.kind == "record" => Err(injected("record", 1)),
        _ => Ok(()),
    }
}
