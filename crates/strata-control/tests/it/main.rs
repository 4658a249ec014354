//! The control plane's integration tests: the controller over a real redb store and a memory
//! pool, without HTTP (authorization, quotas, recovery), and the API's error contract.

mod arithmetic;
mod authz;
mod codes;
mod concurrency;
mod credentials;
mod fixture;
mod jobs;
mod networks;
mod node_scope;
mod overcommit;
mod quotas;
mod rebalance;
mod recovery;
mod shares;
mod staging;
mod switches;
