//! Explanations in user terms.

use strata_place::{plan, Cluster, PlanOptions};

use crate::build::{job, node, with_label};

fn cluster_with_running() -> Cluster {
    // node-1: one 4-GPU island in use by "busy"; node-2: one island partly used.
    let base = Cluster {
        revision: 9,
        nodes: vec![
            node("node-1", 8, &[&[0, 1, 2, 3, 4, 5, 6, 7]]),
            node("node-2", 8, &[&[0, 1, 2, 3, 4, 5, 6, 7]]),
        ],
        running: vec![],
    };
    let p = plan(
        &base,
        &[job("busy", 5, 5), job("busy2", 5, 6)],
        &PlanOptions::default(),
    )
    .unwrap();
    assert_eq!(p.placements.len(), 2);
    Cluster {
        running: p.placements,
        ..base
    }
}

#[test]
fn island_too_small_anywhere() {
    let c = cluster_with_running();
    let mut j = job("huge", 0, 16);
    j.same_island = true;
    j.gpu_model = Some("H200".into());
    let p = plan(&c, &[j], &PlanOptions::default()).unwrap();
    let e = &p.unplaced[0].explanation;
    assert_eq!(
        e.message,
        "needs 16 H200 in one NVLink island; the largest NVLink island has 8; \
         no node could hold it even when empty"
    );
    assert_eq!(e.binding, ["island"]);
    assert!(e.drain.is_empty());
}

#[test]
fn island_busy_names_the_node_to_drain() {
    let c = cluster_with_running();
    let mut j = job("eight", 0, 8);
    j.same_island = true;
    j.gpu_model = Some("H200".into());
    let p = plan(&c, &[j], &PlanOptions::default()).unwrap();
    let e = &p.unplaced[0].explanation;
    // busy2 holds 6 on one node, busy 5 on the other: the largest free island has 3; either
    // node drained would do, and they tie on jobs, so the one with fewer GPUs in use wins.
    let busy_node = &c
        .running
        .iter()
        .find(|x| x.job.name == "busy")
        .unwrap()
        .parts[0]
        .node;
    assert_eq!(
        e.message,
        format!(
            "needs 8 H200 in one NVLink island; the largest free island has 3; \
             draining {busy_node} would make room"
        )
    );
    assert_eq!(e.drain, std::slice::from_ref(busy_node));
}

#[test]
fn resources_bind_one_by_one_and_together() {
    let c = cluster_with_running();
    let mut mem = job("mem", 0, 1);
    mem.memory_bytes = 600 << 30;
    let p = plan(&c, &[mem], &PlanOptions::default()).unwrap();
    let e = &p.unplaced[0].explanation;
    assert_eq!(e.binding, ["memory"]);
    assert!(e
        .message
        .contains("needs 600 GiB memory on one node; the largest node has 512 GiB"));
    assert!(e.drain.is_empty());

    // 3 GPUs free on one node, 2 on the other; 490 GiB memory free on each: a job for 3 GPUs
    // and 495 GiB fits neither, though each alone fits somewhere? Memory alone does not.
    let mut both = job("both", 0, 3);
    both.memory_bytes = 480 << 30;
    let p = plan(&c, &[both], &PlanOptions::default()).unwrap();
    assert!(p.placements.len() == 1, "{:?}", p.unplaced);
    let mut combo = job("combo", 0, 3);
    combo.memory_bytes = 490 << 30;
    combo.cpu_cores = 59;
    let c2 = Cluster {
        running: {
            let mut r = c.running.clone();
            // Give the 3-free node's CPU to busy so only the other node has 59 cores free.
            let three_free = r.iter().position(|x| x.job.name == "busy").unwrap();
            r[three_free].parts[0].cpu_cores = 10;
            r
        },
        ..c.clone()
    };
    let p = plan(&c2, &[combo], &PlanOptions::default()).unwrap();
    let e = &p.unplaced[0].explanation;
    assert_eq!(e.binding, ["combination"], "{}", e.message);
    assert!(
        e.message
            .ends_with("no node has all of it free at once; draining node-1 would make room")
            || e.message
                .ends_with("no node has all of it free at once; draining node-2 would make room"),
        "{}",
        e.message
    );
}

#[test]
fn spanning_job_names_the_nodes_to_drain() {
    let base = Cluster {
        revision: 1,
        nodes: vec![
            with_label(node("node-3", 8, &[]), "rack", "r1"),
            with_label(node("node-7", 8, &[]), "rack", "r1"),
            with_label(node("node-9", 8, &[]), "rack", "r2"),
        ],
        running: vec![],
    };
    let p = plan(
        &base,
        &[job("a", 5, 2), job("b", 5, 2)],
        &PlanOptions::default(),
    )
    .unwrap();
    let c = Cluster {
        running: p.placements,
        ..base
    };
    let mut j = job("wide", 0, 16);
    j.gpu_model = Some("H200".into());
    j.same_label = Some("rack".into());
    let p = plan(&c, &[j], &PlanOptions::default()).unwrap();
    let e = &p.unplaced[0].explanation;
    assert_eq!(e.binding, ["label_group"]);
    assert!(
        e.message
            .starts_with("needs 16 H200 across nodes of one rack; the most free in one rack is"),
        "{}",
        e.message
    );
    assert!(e.message.ends_with("would make room"), "{}", e.message);
    assert!(!e.drain.is_empty());
}

#[test]
fn unknown_model() {
    let c = cluster_with_running();
    let mut j = job("b200", 0, 1);
    j.gpu_model = Some("B200".into());
    let p = plan(&c, &[j], &PlanOptions::default()).unwrap();
    assert_eq!(
        p.unplaced[0].explanation.message,
        "needs 1 B200; no node has B200"
    );
}
