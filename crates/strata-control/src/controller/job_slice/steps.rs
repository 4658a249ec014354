//! The vocabulary of a job's slice: what a create asks for, what it resolves to, the saga's
//! steps and how they show; the step list of a job on its parts (pure: no store, no I/O). The
//! driving is in `mod.rs`; see there for the steps' meaning and invariants.

use serde::{Deserialize, Serialize};
use strata_place::Part;
use strata_vpc::model::fmt_mac;

use crate::controller::saga::{Saga, StepState};

/// Most `--volume` entries one job names.
pub const JOB_VOLUMES_MAX: usize = 8;

/// What a create asks to be made with the job, as named in the request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SliceRequest {
    /// The tenant network (id or name).
    pub network: Option<String>,
    /// Its subnet (id or name; default: the network's only subnet).
    pub subnet: Option<String>,
    /// A cap on each of the job's ports, bits per second.
    pub port_cap_bps: Option<u64>,
    /// Clones of checkpoint groups.
    pub volumes: Vec<VolumeRequest>,
}

/// `NAME=clone:GROUP`: each member of the group cloned as `NAME-MEMBER`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeRequest {
    /// The clones' prefix (default: the job's name).
    pub name: Option<String>,
    /// The checkpoint group (id or name).
    pub group: String,
}

/// The slice a job asks for, resolved at create.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SliceSpec {
    /// The network and subnet its ports go on.
    #[serde(default)]
    pub network: Option<SliceNetwork>,
    /// A cap on each port, bits per second.
    #[serde(default)]
    pub port_cap_bps: Option<u64>,
    /// The groups cloned.
    #[serde(default)]
    pub volumes: Vec<SliceClones>,
}

impl SliceSpec {
    /// Whether nothing is to be made.
    pub fn is_empty(&self) -> bool {
        self.network.is_none() && self.volumes.is_empty()
    }
}

/// A network and subnet, by id (names kept for display).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SliceNetwork {
    /// Network id.
    pub id: String,
    /// Network name.
    pub name: String,
    /// Subnet id.
    pub subnet: String,
    /// Subnet name.
    pub subnet_name: String,
}

/// One `--volume`: a group and the clones it makes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SliceClones {
    /// Prefix of the clones' names.
    pub name: String,
    /// Group id.
    pub group: String,
    /// Group name.
    pub group_name: String,
    /// Its members, in the group's order (a group never changes once taken).
    pub members: Vec<CloneMember>,
}

/// A member of a group to clone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloneMember {
    /// The member snapshot's id.
    pub snapshot: String,
    /// The clone's name (`PREFIX-VOLUME`, fixed at create).
    pub clone: String,
}

/// What becomes of the job when the saga's `place` step is undone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AfterUndo {
    /// Back to the queue, with the failing step's error as the reason (an admission).
    Requeue,
    /// Removed, its GPUs given back (the create call's own job: the call answers the error).
    Forget,
    /// Removed after its slice (a delete; clones in use refuse rather than go).
    Delete,
}

/// A job's slice saga and what its undo does with the job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SliceRun {
    /// The steps and how far they got.
    pub saga: Saga<SliceStep>,
    /// What undoing `place` does.
    pub then: AfterUndo,
    /// The id the saga's identities are drawn from.
    pub id: String,
}

/// One step of a slice (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SliceStep {
    /// The job placed on its parts.
    Place,
    /// A port for part `part`.
    Port {
        /// The part's index.
        part: usize,
        /// The part's node.
        node: String,
        /// Port name.
        name: String,
        /// Network id.
        network: String,
        /// Subnet id.
        subnet: String,
        /// The MAC the port is made with (its identity beside the name).
        mac: String,
        /// What was made.
        #[serde(default)]
        made: Option<MadePort>,
    },
    /// A port's guarantee and cap.
    Guarantee {
        /// Port name.
        name: String,
        /// Network id.
        network: String,
        /// Guarantee, bits per second.
        min_bps: Option<u64>,
        /// Cap, bits per second.
        cap_bps: Option<u64>,
    },
    /// A clone of one member of a group.
    Clone {
        /// The clone's name.
        name: String,
        /// Group name (display).
        group: String,
        /// The member snapshot.
        snapshot: String,
        /// The request id the clone is made under (its identity).
        request: String,
        /// The volume made.
        #[serde(default)]
        made: Option<String>,
    },
}

impl SliceStep {
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            SliceStep::Place => "place",
            SliceStep::Port { .. } => "port",
            SliceStep::Guarantee { .. } => "guarantee",
            SliceStep::Clone { .. } => "clone",
        }
    }
}

/// A port the slice made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MadePort {
    /// Port id.
    pub id: String,
    /// Its TAP on this node: what the job's VM or namespace plugs into.
    pub device: String,
    /// Its address.
    pub ip: String,
}

/// Where a slice is, for display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SliceState {
    /// A dry run: what would be made.
    Planned,
    /// Asked for by a job waiting in the queue: made when it is admitted.
    Waiting,
    /// Being made.
    Making,
    /// Made.
    Ready,
    /// Being undone (a failed step, a delete, or an undo to resume).
    Undoing,
}

/// A port of a slice, for display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlicePortView {
    /// Port name.
    pub name: String,
    /// The part's node.
    pub node: String,
    /// Port id (once made).
    pub id: Option<String>,
    /// The TAP to plug (once made).
    pub device: Option<String>,
    /// Its address (once made).
    pub ip: Option<String>,
    /// Its MAC (once made).
    pub mac: Option<String>,
    /// Guarantee, bits per second.
    pub min_bps: Option<u64>,
    /// Cap, bits per second.
    pub cap_bps: Option<u64>,
}

/// A volume of a slice, for display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SliceVolumeView {
    /// Volume name.
    pub name: String,
    /// The group it is a clone from.
    pub group: String,
    /// The member snapshot.
    pub snapshot: String,
    /// Volume id (once made).
    pub id: Option<String>,
}

/// A job's slice, for display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SliceView {
    /// Where it is.
    pub state: SliceState,
    /// Network name.
    pub network: Option<String>,
    /// Subnet name.
    pub subnet: Option<String>,
    /// Ports.
    pub ports: Vec<SlicePortView>,
    /// Volumes.
    pub volumes: Vec<SliceVolumeView>,
}

/// The port of part `k` of a job of `parts` parts.
fn port_name(job: &str, k: usize, parts: usize) -> String {
    if parts == 1 {
        format!("job-{job}")
    } else {
        format!("job-{job}-{k}")
    }
}

/// The steps of a job's slice on `parts`, the first (`place`) done by the caller.
pub(crate) fn slice_steps(spec: &SliceSpec, job: &str, parts: &[Part], id: &str) -> Vec<SliceStep> {
    let mut steps = vec![SliceStep::Place];
    if let Some(net) = &spec.network {
        for (k, part) in parts.iter().enumerate() {
            let name = port_name(job, k, parts.len());
            let seed = strata_vpc::ipam::fnv(&format!("{id}/{k}"));
            let mac = strata_vpc::ipam::allocate_mac(seed, &Default::default());
            steps.push(SliceStep::Port {
                part: k,
                node: part.node.clone(),
                name: name.clone(),
                network: net.id.clone(),
                subnet: net.subnet.clone(),
                mac: fmt_mac(&mac),
                made: None,
            });
            let min_bps = (part.bandwidth_bps > 0).then_some(part.bandwidth_bps);
            if min_bps.is_some() || spec.port_cap_bps.is_some() {
                steps.push(SliceStep::Guarantee {
                    name,
                    network: net.id.clone(),
                    min_bps,
                    cap_bps: spec.port_cap_bps,
                });
            }
        }
    }
    let mut i = 0;
    for v in &spec.volumes {
        for m in &v.members {
            steps.push(SliceStep::Clone {
                name: m.clone.clone(),
                group: v.group_name.clone(),
                snapshot: m.snapshot.clone(),
                request: format!("job-{id}-{i}"),
                made: None,
            });
            i += 1;
        }
    }
    steps
}

/// The view of `steps` (with their states): ports and volumes made, or all when planned.
pub(crate) fn view_of<'a>(
    spec: &SliceSpec,
    steps: impl Iterator<Item = (&'a SliceStep, StepState)> + Clone,
    state: SliceState,
) -> SliceView {
    let shown = |st: StepState| state == SliceState::Planned || st == StepState::Done;
    let mut ports = Vec::new();
    let mut volumes = Vec::new();
    for (step, st) in steps.clone() {
        match step {
            SliceStep::Port {
                node,
                name,
                mac,
                made,
                ..
            } if shown(st) => ports.push(SlicePortView {
                name: name.clone(),
                node: node.clone(),
                id: made.as_ref().map(|m| m.id.clone()),
                device: made.as_ref().map(|m| m.device.clone()),
                ip: made.as_ref().map(|m| m.ip.clone()),
                mac: made.as_ref().map(|_| mac.clone()),
                min_bps: None,
                cap_bps: None,
            }),
            SliceStep::Clone {
                name,
                group,
                snapshot,
                made,
                ..
            } if shown(st) => volumes.push(SliceVolumeView {
                name: name.clone(),
                group: group.clone(),
                snapshot: snapshot.clone(),
                id: made.clone(),
            }),
            _ => {}
        }
    }
    for (step, st) in steps {
        if let SliceStep::Guarantee {
            name,
            min_bps,
            cap_bps,
            ..
        } = step
        {
            if shown(st) {
                if let Some(p) = ports.iter_mut().find(|p| &p.name == name) {
                    p.min_bps = *min_bps;
                    p.cap_bps = *cap_bps;
                }
            }
        }
    }
    SliceView {
        state,
        network: spec.network.as_ref().map(|n| n.name.clone()),
        subnet: spec.network.as_ref().map(|n| n.subnet_name.clone()),
        ports,
        volumes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(node: &str, bw: u64) -> Part {
        Part {
            node: node.into(),
            gpus: vec![],
            cpu_cores: 1,
            memory_bytes: 0,
            bandwidth_bps: bw,
            storage_bps: 0,
        }
    }

    fn spec() -> SliceSpec {
        SliceSpec {
            network: Some(SliceNetwork {
                id: "n1".into(),
                name: "vpc".into(),
                subnet: "s1".into(),
                subnet_name: "web".into(),
            }),
            port_cap_bps: None,
            volumes: vec![SliceClones {
                name: "data".into(),
                group: "g1".into(),
                group_name: "ckpt".into(),
                members: vec![
                    CloneMember {
                        snapshot: "a".into(),
                        clone: "data-shard0".into(),
                    },
                    CloneMember {
                        snapshot: "b".into(),
                        clone: "data-shard1".into(),
                    },
                ],
            }],
        }
    }

    #[test]
    fn steps_are_place_then_a_port_and_guarantee_per_part_then_the_clones() {
        let steps = slice_steps(&spec(), "train", &[part("a", 10), part("b", 0)], "S");
        let kinds: Vec<&str> = steps.iter().map(SliceStep::kind).collect();
        // Part b has no bandwidth and the job no cap: no guarantee step for it.
        assert_eq!(
            kinds,
            ["place", "port", "guarantee", "port", "clone", "clone"]
        );
        let names: Vec<String> = steps
            .iter()
            .filter_map(|s| match s {
                SliceStep::Port { name, .. } | SliceStep::Clone { name, .. } => Some(name.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(
            names,
            ["job-train-0", "job-train-1", "data-shard0", "data-shard1"]
        );
        let one = slice_steps(&spec(), "train", &[part("a", 5)], "S");
        assert!(matches!(&one[1], SliceStep::Port { name, .. } if name == "job-train"));
        assert!(matches!(
            &one[2],
            SliceStep::Guarantee {
                min_bps: Some(5),
                cap_bps: None,
                ..
            }
        ));
    }

    #[test]
    fn identities_differ_per_saga_and_per_part() {
        let macs = |id: &str| -> Vec<String> {
            slice_steps(&spec(), "t", &[part("a", 1), part("b", 1)], id)
                .into_iter()
                .filter_map(|s| match s {
                    SliceStep::Port { mac, .. } => Some(mac),
                    SliceStep::Clone { request, .. } => Some(request),
                    _ => None,
                })
                .collect()
        };
        let (a, b) = (macs("one"), macs("two"));
        assert_eq!(a, macs("one"), "drawn from the saga's id: the same again");
        assert!(a.iter().all(|x| !b.contains(x)), "{a:?} {b:?}");
        let unique: std::collections::BTreeSet<&String> = a.iter().collect();
        assert_eq!(unique.len(), a.len());
    }

    #[test]
    fn the_view_shows_what_is_done_and_a_plan_shows_everything() {
        let steps = slice_steps(&spec(), "t", &[part("a", 7)], "S");
        let planned = view_of(
            &spec(),
            steps.iter().map(|s| (s, StepState::Planned)),
            SliceState::Planned,
        );
        assert_eq!(planned.ports.len(), 1);
        assert_eq!(planned.ports[0].min_bps, Some(7));
        assert_eq!(planned.volumes.len(), 2);
        // Only the port done: no guarantee shown, no volumes.
        let states = [
            StepState::Done,
            StepState::Done,
            StepState::Failed,
            StepState::Planned,
            StepState::Planned,
        ];
        let made = view_of(&spec(), steps.iter().zip(states), SliceState::Undoing);
        assert_eq!(made.ports.len(), 1);
        assert_eq!(made.ports[0].min_bps, None);
        assert!(made.volumes.is_empty());
        assert_eq!(made.network.as_deref(), Some("vpc"));
    }
}
