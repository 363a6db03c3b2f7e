//! Builds the NUMA/core/cache topology from per-CPU and per-node facts
//! already read from sysfs, following cAdvisor's placement of caches.

use std::collections::BTreeSet;

use super::{Cache, Core, HugePagesInfo, Node};

/// One online logical CPU as sysfs describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct CpuFacts {
    pub cpu: u32,
    pub core_id: i32,
    /// physical_package_id; -1 on some ARM machines.
    pub socket_id: i32,
    pub caches: Vec<CacheFacts>,
}

/// A cache seen from one CPU, with how many CPUs share it.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheFacts {
    pub cache: Cache,
    pub shared_cpus: usize,
}

/// One NUMA node as sysfs describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeFacts {
    pub id: i32,
    pub memory: u64,
    pub hugepages: Vec<HugePagesInfo>,
    pub cpus: Vec<u32>,
    pub distances: Vec<u64>,
}

pub fn count_physical_cores(cpus: &[CpuFacts]) -> u32 {
    cpus.iter().map(|c| (c.socket_id, c.core_id)).collect::<BTreeSet<_>>().len() as u32
}

pub fn count_sockets(cpus: &[CpuFacts]) -> u32 {
    cpus.iter().map(|c| c.socket_id).collect::<BTreeSet<_>>().len() as u32
}

pub fn build_topology(cpus: &[CpuFacts], nodes: &[NodeFacts]) -> Vec<Node> {
    nodes.iter().map(|node| build_node(cpus, node)).collect()
}

fn build_node(cpus: &[CpuFacts], facts: &NodeFacts) -> Node {
    let node_cpus: Vec<&CpuFacts> = cpus.iter().filter(|c| facts.cpus.contains(&c.cpu)).collect();
    let mut node = Node {
        node_id: facts.id,
        memory: facts.memory,
        hugepages: facts.hugepages.clone(),
        cores: group_into_cores(&node_cpus),
        caches: Vec::new(),
        distances: facts.distances.clone(),
    };
    place_caches(&mut node, &node_cpus);
    node
}

/// Threads sharing a (socket, core id) pair are one physical core; core ids
/// repeat across sockets, so the id alone is not enough.
fn group_into_cores(cpus: &[&CpuFacts]) -> Vec<Core> {
    let mut cores: Vec<Core> = Vec::new();
    for cpu in cpus {
        match cores.iter_mut().find(|c| c.core_id == cpu.core_id && c.socket_id == cpu.socket_id) {
            Some(core) => core.thread_ids.push(cpu.cpu),
            None => {
                cores.push(Core { core_id: cpu.core_id, thread_ids: vec![cpu.cpu], caches: Vec::new(), uncore_caches: Vec::new(), socket_id: cpu.socket_id })
            }
        }
    }
    for core in &mut cores {
        core.thread_ids.sort_unstable();
    }
    cores.sort_by_key(|c| (c.socket_id, c.core_id));
    cores
}

/// cAdvisor's rule, judged from the core's first thread: a cache shared only
/// by the core's threads belongs to the core; a cache above L2 shared by the
/// whole node belongs to the node; one above L2 shared by part of the node is
/// an uncore cache of each core using it. Anything else is ignored.
fn place_caches(node: &mut Node, cpus: &[&CpuFacts]) {
    let threads_in_node = cpus.len();
    for core in &mut node.cores {
        let Some(first_thread) = cpus.iter().find(|c| c.cpu == core.thread_ids[0]) else {
            continue;
        };
        let threads_in_core = core.thread_ids.len();
        for facts in &first_thread.caches {
            let cache = facts.cache.clone();
            if cache.level > 2 {
                if facts.shared_cpus == threads_in_node {
                    push_unique(&mut node.caches, cache);
                } else {
                    push_unique(&mut core.uncore_caches, cache);
                }
            } else if facts.shared_cpus == threads_in_core {
                core.caches.push(cache);
            }
        }
    }
}

fn push_unique(caches: &mut Vec<Cache>, cache: Cache) {
    if !caches.contains(&cache) {
        caches.push(cache);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(id: i32, level: u32, cache_type: &str, size: u64, shared_cpus: usize) -> CacheFacts {
        CacheFacts { cache: Cache { id, size, cache_type: cache_type.into(), level }, shared_cpus }
    }

    /// A CPU with private L1d/L1i/L2 shared by its 2 hyperthreads and an L3
    /// shared by `l3_shared` CPUs.
    fn cpu(cpu: u32, core_id: i32, socket_id: i32, l3_id: i32, l3_shared: usize) -> CpuFacts {
        CpuFacts {
            cpu,
            core_id,
            socket_id,
            caches: vec![
                cache(core_id, 1, "Data", 32 * 1024, 2),
                cache(core_id, 1, "Instruction", 32 * 1024, 2),
                cache(core_id, 2, "Unified", 1024 * 1024, 2),
                cache(l3_id, 3, "Unified", 32 * 1024 * 1024, l3_shared),
            ],
        }
    }

    fn node(id: i32, cpus: Vec<u32>) -> NodeFacts {
        NodeFacts { id, memory: 1 << 30, hugepages: vec![], cpus, distances: vec![10, 21] }
    }

    #[test]
    fn hyperthreads_form_one_core_with_private_caches_and_a_node_l3() {
        // 2 cores x 2 threads, Linux numbering: thread siblings are n and n+2.
        let cpus = vec![cpu(0, 0, 0, 0, 4), cpu(1, 1, 0, 0, 4), cpu(2, 0, 0, 0, 4), cpu(3, 1, 0, 0, 4)];
        let topology = build_topology(&cpus, &[node(0, vec![0, 1, 2, 3])]);
        assert_eq!(topology.len(), 1);
        let node = &topology[0];
        assert_eq!(node.cores.len(), 2);
        assert_eq!(node.cores[0].thread_ids, vec![0, 2]);
        assert_eq!(node.cores[1].thread_ids, vec![1, 3]);
        assert_eq!(node.cores[0].caches.len(), 3);
        assert!(node.cores[0].uncore_caches.is_empty());
        assert_eq!(node.caches.len(), 1);
        assert_eq!(node.caches[0].level, 3);
        assert_eq!(node.distances, vec![10, 21]);
        assert_eq!(count_physical_cores(&cpus), 2);
        assert_eq!(count_sockets(&cpus), 1);
    }

    #[test]
    fn l3_shared_by_part_of_the_node_is_an_uncore_cache() {
        // Two CCXs of 2 single-thread cores each, each CCX with its own L3.
        let mut cpus = Vec::new();
        for n in 0..4u32 {
            let mut facts = cpu(n, n as i32, 0, (n / 2) as i32, 2);
            for c in &mut facts.caches[..3] {
                c.shared_cpus = 1;
            }
            cpus.push(facts);
        }
        let topology = build_topology(&cpus, &[node(0, vec![0, 1, 2, 3])]);
        let node = &topology[0];
        assert!(node.caches.is_empty());
        assert_eq!(node.cores[0].uncore_caches[0].id, 0);
        assert_eq!(node.cores[3].uncore_caches[0].id, 1);
        assert_eq!(node.cores[3].caches.len(), 3);
    }

    #[test]
    fn cores_with_equal_ids_on_different_sockets_stay_apart() {
        let cpus = vec![cpu(0, 0, 0, 0, 1), cpu(1, 0, 1, 1, 1)];
        let topology = build_topology(&cpus, &[node(0, vec![0]), node(1, vec![1])]);
        assert_eq!(topology.len(), 2);
        assert_eq!(topology[1].node_id, 1);
        assert_eq!(topology[1].cores.len(), 1);
        assert_eq!(topology[1].cores[0].socket_id, 1);
        assert_eq!(topology[1].cores[0].thread_ids, vec![1]);
        assert_eq!(count_physical_cores(&cpus), 2);
        assert_eq!(count_sockets(&cpus), 2);
    }

    #[test]
    fn a_memory_only_node_has_no_cores() {
        let topology = build_topology(&[cpu(0, 0, 0, 0, 1)], &[node(0, vec![0]), node(1, vec![])]);
        assert!(topology[1].cores.is_empty());
        assert_eq!(topology[1].memory, 1 << 30);
    }
}
