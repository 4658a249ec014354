//! The subset of etcd's v3 gRPC messages the store uses, as prost messages written by hand.
//!
//! Field numbers and types are those of etcd's `etcdserverpb` and `mvccpb` packages (the wire
//! format is the contract; unknown fields a newer server sends are skipped by prost). Writing
//! them here instead of generating them from etcd's `.proto` files is what keeps the build free
//! of `protoc`: see `docs/state-store.md`. Only fields the store reads or sets are declared.
//! Enums travel as their `int32` values (constants below).

/// `Compare.result = EQUAL`.
pub const COMPARE_EQUAL: i32 = 0;
/// `Compare.target = MOD`.
pub const TARGET_MOD: i32 = 2;
/// `Event.type = DELETE` (`PUT` is 0).
pub const EVENT_DELETE: i32 = 1;

/// gRPC method paths.
pub const RANGE: &str = "/etcdserverpb.KV/Range";
/// Txn method.
pub const TXN: &str = "/etcdserverpb.KV/Txn";
/// Compact method.
pub const COMPACT: &str = "/etcdserverpb.KV/Compact";
/// Watch method (bidirectional stream).
pub const WATCH: &str = "/etcdserverpb.Watch/Watch";
/// Lease grant.
pub const LEASE_GRANT: &str = "/etcdserverpb.Lease/LeaseGrant";
/// Lease revoke.
pub const LEASE_REVOKE: &str = "/etcdserverpb.Lease/LeaseRevoke";
/// Lease keep-alive (bidirectional stream).
pub const LEASE_KEEP_ALIVE: &str = "/etcdserverpb.Lease/LeaseKeepAlive";

/// `etcdserverpb.LeaseGrantRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LeaseGrantRequest {
    /// Time to live, seconds.
    #[prost(int64, tag = "1")]
    pub ttl: i64,
    /// Requested id (0: the server picks).
    #[prost(int64, tag = "2")]
    pub id: i64,
}

/// `etcdserverpb.LeaseGrantResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LeaseGrantResponse {
    /// Header.
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    /// The lease's id.
    #[prost(int64, tag = "2")]
    pub id: i64,
    /// Time to live granted, seconds.
    #[prost(int64, tag = "3")]
    pub ttl: i64,
    /// Why the grant failed, if it did.
    #[prost(string, tag = "4")]
    pub error: String,
}

/// `etcdserverpb.LeaseRevokeRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LeaseRevokeRequest {
    /// The lease.
    #[prost(int64, tag = "1")]
    pub id: i64,
}

/// `etcdserverpb.LeaseRevokeResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LeaseRevokeResponse {
    /// Header.
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
}

/// `etcdserverpb.LeaseKeepAliveRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LeaseKeepAliveRequest {
    /// The lease.
    #[prost(int64, tag = "1")]
    pub id: i64,
}

/// `etcdserverpb.LeaseKeepAliveResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LeaseKeepAliveResponse {
    /// Header.
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    /// The lease.
    #[prost(int64, tag = "2")]
    pub id: i64,
    /// Time to live left after the renewal, seconds (0 or less: the lease is gone).
    #[prost(int64, tag = "3")]
    pub ttl: i64,
}

/// `etcdserverpb.ResponseHeader`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ResponseHeader {
    /// Store revision when the request was applied.
    #[prost(int64, tag = "3")]
    pub revision: i64,
}

/// `mvccpb.KeyValue`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyValue {
    /// Key.
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    /// Revision of the last creation.
    #[prost(int64, tag = "2")]
    pub create_revision: i64,
    /// Revision of the last modification.
    #[prost(int64, tag = "3")]
    pub mod_revision: i64,
    /// Value.
    #[prost(bytes = "vec", tag = "5")]
    pub value: Vec<u8>,
}

/// `mvccpb.Event`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Event {
    /// PUT (0) or DELETE (1).
    #[prost(int32, tag = "1")]
    pub r#type: i32,
    /// The key after the event (for a delete: key and the delete's mod_revision).
    #[prost(message, optional, tag = "2")]
    pub kv: Option<KeyValue>,
}

/// `etcdserverpb.RangeRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RangeRequest {
    /// First key.
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    /// End of the range (exclusive); empty: only `key`.
    #[prost(bytes = "vec", tag = "2")]
    pub range_end: Vec<u8>,
    /// Most keys returned (0: no limit).
    #[prost(int64, tag = "3")]
    pub limit: i64,
    /// Only the count (and the header).
    #[prost(bool, tag = "9")]
    pub count_only: bool,
}

/// `etcdserverpb.RangeResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RangeResponse {
    /// Header.
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    /// Keys, in key order.
    #[prost(message, repeated, tag = "2")]
    pub kvs: Vec<KeyValue>,
}

/// `etcdserverpb.PutRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PutRequest {
    /// Key.
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    /// Value.
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
    /// Lease the key lives with (0: none).
    #[prost(int64, tag = "3")]
    pub lease: i64,
}

/// `etcdserverpb.DeleteRangeRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DeleteRangeRequest {
    /// Key.
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
}

/// `etcdserverpb.RequestOp` (only put and delete are sent).
#[derive(Clone, PartialEq, prost::Message)]
pub struct RequestOp {
    /// The operation.
    #[prost(oneof = "Request", tags = "2, 3")]
    pub request: Option<Request>,
}

/// `RequestOp.request`.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Request {
    /// A put.
    #[prost(message, tag = "2")]
    Put(PutRequest),
    /// A delete of one key.
    #[prost(message, tag = "3")]
    Delete(DeleteRangeRequest),
}

/// `etcdserverpb.Compare` (only `mod_revision` comparisons are sent).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Compare {
    /// EQUAL, GREATER, LESS, NOT_EQUAL.
    #[prost(int32, tag = "1")]
    pub result: i32,
    /// VERSION, CREATE, MOD, VALUE, LEASE.
    #[prost(int32, tag = "2")]
    pub target: i32,
    /// Key.
    #[prost(bytes = "vec", tag = "3")]
    pub key: Vec<u8>,
    /// The compared value.
    #[prost(oneof = "TargetUnion", tags = "6")]
    pub target_union: Option<TargetUnion>,
}

/// `Compare.target_union`.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum TargetUnion {
    /// Compared mod_revision.
    #[prost(int64, tag = "6")]
    ModRevision(i64),
}

/// `etcdserverpb.TxnRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TxnRequest {
    /// Conditions.
    #[prost(message, repeated, tag = "1")]
    pub compare: Vec<Compare>,
    /// Applied when every condition holds.
    #[prost(message, repeated, tag = "2")]
    pub success: Vec<RequestOp>,
}

/// `etcdserverpb.TxnResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TxnResponse {
    /// Header.
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    /// Whether the comparisons held.
    #[prost(bool, tag = "2")]
    pub succeeded: bool,
}

/// `etcdserverpb.CompactionRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CompactionRequest {
    /// Revisions before this one are dropped.
    #[prost(int64, tag = "1")]
    pub revision: i64,
    /// Wait until the compaction is applied to the backend.
    #[prost(bool, tag = "2")]
    pub physical: bool,
}

/// `etcdserverpb.CompactionResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CompactionResponse {
    /// Header.
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
}

/// `etcdserverpb.WatchRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WatchRequest {
    /// Create.
    #[prost(oneof = "WatchRequestUnion", tags = "1")]
    pub request_union: Option<WatchRequestUnion>,
}

/// `WatchRequest.request_union`.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum WatchRequestUnion {
    /// Starts a watch.
    #[prost(message, tag = "1")]
    Create(WatchCreateRequest),
}

/// `etcdserverpb.WatchCreateRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WatchCreateRequest {
    /// First key.
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    /// End of the range (exclusive).
    #[prost(bytes = "vec", tag = "2")]
    pub range_end: Vec<u8>,
    /// First revision to report (0: from now).
    #[prost(int64, tag = "3")]
    pub start_revision: i64,
}

/// `etcdserverpb.WatchResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WatchResponse {
    /// Header (its revision: the store's when the response was sent).
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    /// The answer to a create request.
    #[prost(bool, tag = "3")]
    pub created: bool,
    /// The watch was cancelled (for example: its start revision was compacted).
    #[prost(bool, tag = "4")]
    pub canceled: bool,
    /// The compaction revision, when the start revision was compacted.
    #[prost(int64, tag = "5")]
    pub compact_revision: i64,
    /// Why the watch was cancelled.
    #[prost(string, tag = "6")]
    pub cancel_reason: String,
    /// Events, oldest first; etcd never splits a revision across responses unless the
    /// watcher asked for fragments (this one does not).
    #[prost(message, repeated, tag = "11")]
    pub events: Vec<Event>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn a_mod_revision_compare_has_etcds_bytes() {
        // Compare{result EQUAL, target MOD, key "k", mod_revision 0}: the defaults (EQUAL = 0)
        // are not sent, target 2 is, and the zero mod_revision of the oneof must be sent
        // (a oneof field is present even at its default): without it etcd would compare the
        // VERSION target against an unset value.
        let c = Compare {
            result: COMPARE_EQUAL,
            target: TARGET_MOD,
            key: b"k".to_vec(),
            target_union: Some(TargetUnion::ModRevision(0)),
        };
        assert_eq!(
            c.encode_to_vec(),
            vec![0x10, 0x02, 0x1a, 0x01, b'k', 0x30, 0x00]
        );
    }
}
