//! Shell completion of names from the daemon (issue 16, rough edge 14): `strata completion
//! bash` prints clap's static script and a hook that, at a positional argument naming an
//! existing object (`strata volume show <TAB>`), asks the binary itself
//! (`strata __complete WORDS...`) for the names the daemon has.
//!
//! Which argument the cursor is at is found from clap's own command tree (`positional_at`),
//! and what it names by a small rule over its id and command (`kind_of`); both are pure and
//! unit-tested. The lookup is quiet and quick: any error (no daemon, no token, a timeout of a
//! second or two) prints nothing, so a TAB never prints an error into the user's line.

use anyhow::Result;
use serde_json::Value;

use super::{enc, Client};

/// An object kind whose names can be completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Volume,
    /// `VOLUME@SNAPSHOT`.
    Snapshot,
    Tenant,
    Pool,
    Switch,
    Network,
    SecurityGroup,
    LoadBalancer,
    Port,
    Job,
    Node,
}

/// The command path (subcommand names) and the id of the positional argument that the next
/// word would fill, after `words` (the words typed after `strata`, the one being completed
/// left out). `None` when the next word is not a positional (an option's value, or past the
/// last positional).
pub fn positional_at(root: &clap::Command, words: &[String]) -> Option<(Vec<String>, String)> {
    let mut cmd = root;
    let mut path = Vec::new();
    let mut positional = 0usize;
    let mut i = 0;
    let takes_value = |cmd: &clap::Command, w: &str| -> bool {
        let find = |a: &&clap::Arg| {
            if let Some(long) = w.strip_prefix("--") {
                a.get_long() == Some(long)
            } else {
                let mut chars = w.chars().skip(1);
                match (chars.next(), chars.next()) {
                    (Some(c), None) => a.get_short() == Some(c),
                    _ => false,
                }
            }
        };
        cmd.get_arguments()
            .chain(root.get_arguments().filter(|a| a.is_global_set()))
            .find(find)
            .is_some_and(|a| a.get_action().takes_values())
    };
    while i < words.len() {
        let w = words[i].as_str();
        i += 1;
        if w == "--" {
            continue;
        }
        if w.starts_with('-') && w.len() > 1 {
            if !w.contains('=') && takes_value(cmd, w) {
                i += 1;
            }
            continue;
        }
        if positional == 0 {
            if let Some(sub) = cmd.find_subcommand(w) {
                cmd = sub;
                path.push(sub.get_name().to_string());
                continue;
            }
        }
        positional += 1;
    }
    // An option waiting for its value.
    if let Some(last) = words.last() {
        if last.starts_with('-') && !last.contains('=') && takes_value(cmd, last) {
            return None;
        }
    }
    let arg = cmd.get_positionals().nth(positional)?;
    Some((path, arg.get_id().to_string()))
}

/// What the positional `arg` of the command `path` names, if it names an existing object.
/// New names (`create NAME`, `add-port NET NAME`) are not completed.
pub fn kind_of(path: &[String], arg: &str) -> Option<Kind> {
    let top = path.first().map(String::as_str).unwrap_or("");
    let sub = path.get(1).map(String::as_str).unwrap_or("");
    let by_arg = match arg {
        "volume" | "volumes" | "vol" => Some(Kind::Volume),
        "snapshot" => Some(Kind::Snapshot),
        "tenant" => Some(Kind::Tenant),
        "pool" => Some(Kind::Pool),
        "switch" => Some(Kind::Switch),
        "network" | "net" => Some(Kind::Network),
        "group" | "security_group" if top == "security-group" => Some(Kind::SecurityGroup),
        "balancer" | "load_balancer" | "lb" => Some(Kind::LoadBalancer),
        "port" | "backend" => Some(Kind::Port),
        "job" => Some(Kind::Job),
        "node" => Some(Kind::Node),
        _ => None,
    };
    if by_arg.is_some() {
        return by_arg;
    }
    let names_existing = !(sub == "create" || sub == "declare" || sub.starts_with("add-"));
    if !(arg == "name" || arg == "id") || !names_existing {
        return None;
    }
    match top {
        "volume" => Some(Kind::Volume),
        "tenant" => Some(Kind::Tenant),
        "pool" => Some(Kind::Pool),
        "switch" => Some(Kind::Switch),
        "network" => Some(Kind::Network),
        "security-group" => Some(Kind::SecurityGroup),
        "load-balancer" => Some(Kind::LoadBalancer),
        "job" => Some(Kind::Job),
        "node" => Some(Kind::Node),
        _ => None,
    }
}

/// Appended to clap's bash script: after its own completion, add the daemon's names when the
/// cursor is at an argument that names an object.
pub const BASH_HOOK: &str = r#"
# Names from the daemon (volumes, networks, ...): asked of strata itself at each TAB.
_strata_names() {
    local cur=${COMP_WORDS[COMP_CWORD]} names
    names=$(strata __complete -- "${COMP_WORDS[@]:1:$((COMP_CWORD - 1))}" 2>/dev/null) || return 0
    [ -n "$names" ] && COMPREPLY+=($(compgen -W "$names" -- "$cur"))
    return 0
}
_strata_with_names() {
    _strata "$@"
    _strata_names
}
complete -F _strata_with_names -o bashdefault -o default strata
"#;

impl Client {
    /// The names of existing objects of `kind` the caller can see, one per line.
    pub fn complete_names(&self, kind: Kind) -> Result<Vec<String>> {
        let names = |path: &str| -> Result<Vec<String>> {
            let v = self.req("GET", path, None)?;
            Ok(items(&v)
                .filter_map(|i| i["name"].as_str().map(str::to_string))
                .collect())
        };
        let per_network = |what: &str| -> Result<Vec<String>> {
            let nets = self.req("GET", "/v1/networks", None)?;
            let mut out = Vec::new();
            for n in items(&nets) {
                let id = n["id"].as_str().unwrap_or_default();
                let v = self.req("GET", &format!("/v1/networks/{}/{what}", enc(id)), None)?;
                out.extend(items(&v).filter_map(|i| i["name"].as_str().map(str::to_string)));
            }
            Ok(out)
        };
        let mut out = match kind {
            Kind::Volume => names("/v1/volumes")?,
            Kind::Snapshot => {
                let vols = self.req("GET", "/v1/volumes", None)?;
                let mut out = Vec::new();
                for v in items(&vols) {
                    let (id, name) = (
                        v["id"].as_str().unwrap_or_default(),
                        v["name"].as_str().unwrap_or_default(),
                    );
                    let snaps =
                        self.req("GET", &format!("/v1/volumes/{}/snapshots", enc(id)), None)?;
                    out.extend(
                        items(&snaps)
                            .filter_map(|s| s["name"].as_str().map(|s| format!("{name}@{s}"))),
                    );
                }
                out
            }
            Kind::Tenant => names("/v1/tenants")?,
            Kind::Pool => names("/v1/pools")?,
            Kind::Switch => names("/v1/switches")?,
            Kind::Network => names("/v1/networks")?,
            Kind::SecurityGroup => names("/v1/security-groups")?,
            Kind::LoadBalancer => per_network("load-balancers")?,
            Kind::Port => per_network("ports")?,
            Kind::Job => names("/v1/jobs")?,
            Kind::Node => names("/v1/nodes")?,
        };
        out.sort();
        out.dedup();
        Ok(out)
    }
}

fn items(v: &Value) -> impl Iterator<Item = &Value> {
    v["items"].as_array().into_iter().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Arg, ArgAction, Command};

    fn tree() -> Command {
        Command::new("strata")
            .arg(
                Arg::new("output")
                    .short('o')
                    .long("output")
                    .global(true)
                    .action(ArgAction::Set),
            )
            .subcommand(
                Command::new("volume")
                    .subcommand(Command::new("show").arg(Arg::new("name")))
                    .subcommand(
                        Command::new("create")
                            .arg(Arg::new("name"))
                            .arg(Arg::new("size").long("size").action(ArgAction::Set)),
                    ),
            )
            .subcommand(
                Command::new("snapshot").subcommand(
                    Command::new("create")
                        .arg(Arg::new("volume"))
                        .arg(Arg::new("name")),
                ),
            )
            .subcommand(
                Command::new("network").subcommand(
                    Command::new("add-port")
                        .arg(Arg::new("network"))
                        .arg(Arg::new("name"))
                        .arg(Arg::new("tenant").long("tenant").action(ArgAction::Set)),
                ),
            )
    }

    fn at(words: &str) -> Option<Kind> {
        let words: Vec<String> = words.split_whitespace().map(str::to_string).collect();
        let (path, arg) = positional_at(&tree(), &words)?;
        kind_of(&path, &arg)
    }

    #[test]
    fn existing_objects_are_completed_new_names_are_not() {
        assert_eq!(at("volume show"), Some(Kind::Volume));
        assert_eq!(at("-o json volume show"), Some(Kind::Volume));
        assert_eq!(at("volume show -o json"), Some(Kind::Volume));
        assert_eq!(at("volume create"), None);
        assert_eq!(at("volume create x --size"), None);
        assert_eq!(at("snapshot create"), Some(Kind::Volume));
        assert_eq!(at("snapshot create ckpt"), None);
        assert_eq!(at("network add-port"), Some(Kind::Network));
        assert_eq!(at("network add-port --tenant t"), Some(Kind::Network));
        assert_eq!(at("network add-port vpc1"), None);
        // Past the last positional, or at a subcommand: nothing.
        assert_eq!(at("volume show a"), None);
        assert_eq!(at("volume"), None);
        // An option's value is not a positional.
        assert_eq!(at("network add-port --tenant"), None);
    }
}
