//! The responder actions against real clients: busybox `udhcpc` in a namespace gets its
//! address, router, DNS and domain from a `dhcp_reply` flow; the kernel's ARP and ping get
//! their answers from `arp_reply` and `icmp_echo_reply`; `ping -t 1` past the gateway gets a
//! time exceeded from `icmp_error`. Nothing is flooded: the only other port sees no frame.

use strata_dataplane::{Dataplane, DataplaneConfig, PortSpec};
use strata_net::respond::ReplyDrop;
use strata_net::Domain;

use crate::netenv::{require, sh, unique, Netns};

const GW_MAC: &str = "02:00:00:00:00:fe";

#[test]
fn a_real_dhcp_client_arp_and_ping_get_their_answers_from_flows() {
    require(&["ip", "sh", "ping", "busybox"]);
    let host = Netns::new("h");
    let (vm, obs) = (Netns::new("v"), Netns::new("o"));
    let dp = Dataplane::spawn(DataplaneConfig {
        netns: Some(host.path()),
        ..DataplaneConfig::default()
    })
    .expect("dataplane starts");
    let (tv, to) = (unique("tv"), unique("to"));
    let vni = Some(Domain::Vni(300));
    dp.add_port(PortSpec::tap(&tv, vni)).unwrap();
    dp.add_port(PortSpec::tap(&to, vni)).unwrap();
    for f in [
        format!(
            "priority=300,in_port={tv},udp,tp_dst=67,actions=dhcp_reply(yiaddr=10.30.0.5,\
             prefix=24,router=10.30.0.1,dns=10.30.0.2;10.30.0.3,lease=600,server=10.30.0.1,\
             server_mac={GW_MAC},mtu=1400,domain=t1.example),in_port"
        ),
        format!("priority=300,arp,arp_op=1,arp_tpa=10.30.0.1,actions=arp_reply:{GW_MAC},in_port"),
        "priority=300,icmp,icmp_type=8,nw_dst=10.30.0.1,actions=icmp_echo_reply,in_port".into(),
        "priority=250,ip,nw_ttl=1,actions=icmp_error(type=11,code=0,src=10.30.0.1),in_port".into(),
        "priority=250,ip,nw_ttl=0,actions=drop".into(),
        "priority=200,ip,nw_dst=10.99.0.0/16,actions=dec_ttl,drop".into(),
        "priority=0,actions=normal".into(),
    ] {
        dp.add_flow(&f).unwrap_or_else(|e| panic!("{f}: {e}"));
    }
    vm.adopt(&host, &tv, "", None);
    obs.adopt(&host, &to, "", None);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let tx_obs = |dp: &Dataplane| {
        let s = dp.stats().unwrap();
        s.port(&to).expect("observer port").stats.tx_packets
    };
    let obs0 = tx_obs(&dp);

    // The script udhcpc runs: apply what it got, and write it down for the test.
    let dir = std::env::temp_dir().join(unique("dh"));
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("script.sh");
    let result = dir.join("lease.env");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\ncase \"$1\" in\n bound|renew)\n  ip addr add \"$ip/$mask\" dev \"$interface\"\n  \
             for r in $router; do ip route add default via \"$r\" dev \"$interface\"; done\n  \
             echo \"ip=$ip mask=$mask router=$router dns=$dns domain=$domain mtu=$mtu lease=$lease serverid=$serverid\" > {}\n  ;;\nesac\nexit 0\n",
            result.display()
        ),
    )
    .unwrap();
    sh(&["chmod", "+x", script.to_str().unwrap()]);
    let out = vm.try_exec(&[
        "busybox",
        "udhcpc",
        "-i",
        &tv,
        "-n",
        "-q",
        "-f",
        "-t",
        "3",
        "-T",
        "1",
        "-s",
        script.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "udhcpc failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let lease = std::fs::read_to_string(&result).expect("udhcpc ran the script with a lease");
    assert!(
        lease.contains("ip=10.30.0.5 mask=24 router=10.30.0.1"),
        "{lease}"
    );
    assert!(
        lease.contains("dns=10.30.0.2 10.30.0.3 domain=t1.example"),
        "{lease}"
    );
    assert!(
        lease.contains("mtu=1400 lease=600 serverid=10.30.0.1"),
        "{lease}"
    );
    let addr = vm.exec(&["ip", "-4", "addr", "show", "dev", &tv]);
    assert!(addr.contains("inet 10.30.0.5/24"), "{addr}");
    let route = vm.exec(&["ip", "-4", "route", "show", "default"]);
    assert!(route.contains("via 10.30.0.1"), "{route}");

    // ARP for the gateway and ping to it are answered by flows.
    assert!(vm.ping("10.30.0.1", 3, 56), "the gateway answers ping");
    let neigh = vm.exec(&["ip", "neigh", "show", "10.30.0.1"]);
    assert!(neigh.contains(GW_MAC), "{neigh}");
    // TTL 1 past the gateway: a time exceeded from the router's address.
    let o = vm.try_exec(&["ping", "-c", "1", "-W", "1", "-t", "1", "10.99.0.9"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("From 10.30.0.1") && text.contains("Time to live exceeded"),
        "{text}"
    );
    let st = dp.with_switch(|sw, _| sw.stats().replies).unwrap();
    assert!(st.dhcp_offers >= 1 && st.dhcp_acks >= 1, "{st:?}");
    assert!(st.arp_replies >= 1 && st.echo_replies >= 3, "{st:?}");
    assert_eq!(st.icmp_errors, 1, "{st:?}");
    assert_eq!(st.dropped(ReplyDrop::DhcpMalformed), 0, "{st:?}");
    assert_eq!(tx_obs(&dp), obs0, "no DHCP, ARP or ping frame was flooded");
    let _ = std::fs::remove_dir_all(&dir);
}
