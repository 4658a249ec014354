//! Planning: optimizer against greedy, islands, spanning, revision and moves.

use std::time::Duration;

use strata_place::{plan, Cluster, Method, PlanOptions};

use crate::build::{job, node, with_label};

#[test]
fn optimizer_beats_greedy_where_greedy_is_myopic() {
    // One 8-GPU node. Greedy takes the high-priority 8-GPU job first (weight 3); two
    // medium-priority 4-GPU jobs are worth 2 + 2 together.
    let cluster = Cluster {
        revision: 42,
        nodes: vec![node("n1", 8, &[])],
        running: vec![],
    };
    let pending = vec![job("big", 2, 8), job("m1", 1, 4), job("m2", 1, 4)];
    let p = plan(&cluster, &pending, &PlanOptions::default()).unwrap();
    assert_eq!(p.method, Method::Optimal);
    let placed: Vec<&str> = p.placements.iter().map(|x| x.job.name.as_str()).collect();
    assert_eq!(placed, ["m1", "m2"]);
    assert!(
        p.score > p.greedy_score + 0.5,
        "{} vs {}",
        p.score,
        p.greedy_score
    );
    assert_eq!(p.revision, 42);
    assert_eq!(p.moves.len(), 2);
    assert!(p.moves.iter().all(|m| m.from.is_empty() && m.to == ["n1"]));
    assert_eq!(p.unplaced.len(), 1);
    assert_eq!(p.unplaced[0].job.name, "big");

    let greedy_only = PlanOptions {
        time_limit: Duration::ZERO,
        ..PlanOptions::default()
    };
    let g = plan(&cluster, &pending, &greedy_only).unwrap();
    assert_eq!(g.method, Method::Greedy);
    assert_eq!(g.placements.len(), 1);
    assert_eq!(g.placements[0].job.name, "big");
}

#[test]
fn same_island_jobs_get_one_island_and_small_jobs_fill_partial_islands() {
    let cluster = Cluster {
        revision: 1,
        nodes: vec![node("n1", 8, &[&[0, 1, 2, 3], &[4, 5, 6, 7]])],
        running: vec![],
    };
    let mut island = job("island", 1, 4);
    island.same_island = true;
    let pending = vec![island, job("small", 0, 2)];
    let p = plan(&cluster, &pending, &PlanOptions::default()).unwrap();
    assert_eq!(p.placements.len(), 2);
    let gpus = |name: &str| {
        p.placements
            .iter()
            .find(|x| x.job.name == name)
            .unwrap()
            .parts[0]
            .gpus
            .clone()
    };
    let i = gpus("island");
    assert!(i == [0, 1, 2, 3] || i == [4, 5, 6, 7], "{i:?}");
    let s = gpus("small");
    // The small job goes to the other island, and leaves two of it free together.
    assert!(s.iter().all(|g| !i.contains(g)), "{s:?}");
}

#[test]
fn a_non_island_job_takes_gpus_from_a_partly_used_island() {
    let cluster = Cluster {
        revision: 1,
        nodes: vec![node("n1", 8, &[&[0, 1, 2, 3], &[4, 5, 6, 7]])],
        running: vec![],
    };
    let mut first = job("first", 2, 1);
    first.gpu_model = Some("H200".into());
    let p = plan(&cluster, &[first.clone()], &PlanOptions::default()).unwrap();
    let running = Cluster {
        running: p.placements.clone(),
        ..cluster.clone()
    };
    let used = p.placements[0].parts[0].gpus[0];
    let p2 = plan(&running, &[job("second", 0, 3)], &PlanOptions::default()).unwrap();
    let got = &p2.placements[0].parts[0].gpus;
    let island_of = |g: u32| g / 4;
    assert!(
        got.iter().all(|&g| island_of(g) == island_of(used)),
        "{got:?} used {used}"
    );
}

#[test]
fn spanning_jobs_stay_in_one_label_group_on_the_fewest_nodes() {
    let cluster = Cluster {
        revision: 3,
        nodes: vec![
            with_label(node("a1", 8, &[]), "rack", "r1"),
            with_label(node("a2", 8, &[]), "rack", "r1"),
            with_label(node("b1", 8, &[]), "rack", "r2"),
            with_label(node("b2", 8, &[]), "rack", "r2"),
            with_label(node("b3", 8, &[]), "rack", "r2"),
        ],
        running: vec![],
    };
    let mut big = job("big", 1, 24);
    big.same_label = Some("rack".into());
    let p = plan(&cluster, &[big.clone()], &PlanOptions::default()).unwrap();
    assert_eq!(p.placements.len(), 1);
    let nodes: Vec<&str> = p.placements[0]
        .parts
        .iter()
        .map(|x| x.node.as_str())
        .collect();
    assert_eq!(nodes, ["b1", "b2", "b3"]);
    // CPU is split in proportion to GPUs.
    assert!(p.placements[0]
        .parts
        .iter()
        .all(|x| x.cpu_cores == 2 && x.gpus.len() == 8));
    // Without same_label, the same job never spans.
    let mut single = big;
    single.same_label = None;
    let p = plan(&cluster, &[single], &PlanOptions::default()).unwrap();
    assert!(p.placements.is_empty());
    assert!(p.unplaced[0]
        .explanation
        .binding
        .contains(&"gpus".to_string()));
}

#[test]
fn cordoned_nodes_take_nothing_and_invalid_input_is_refused() {
    let mut n = node("n1", 8, &[]);
    n.cordoned = true;
    let cluster = Cluster {
        revision: 1,
        nodes: vec![n, node("n2", 0, &[])],
        running: vec![],
    };
    let p = plan(
        &cluster,
        &[job("j", 0, 1), job("cpu", 0, 0)],
        &PlanOptions::default(),
    )
    .unwrap();
    assert_eq!(p.placements.len(), 1);
    assert_eq!(p.placements[0].parts[0].node, "n2");
    assert_eq!(p.unplaced[0].explanation.binding, ["cordoned"]);
    let dup = plan(
        &cluster,
        &[job("j", 0, 1), job("j", 1, 1)],
        &PlanOptions::default(),
    );
    assert!(dup.is_err());
}
