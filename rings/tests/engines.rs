//! Two engines over a simulated wire that loses frames: an application's WRITEs and READs
//! of random sizes (1 B to 1 MiB) through its rings, every byte checked against a model.

use std::{collections::VecDeque, net::IpAddr, sync::Arc};

use xnic_rings::{
    engine::{Endpoint, Engine, QpConfig},
    entries::{Complete, OP_READ, OP_WRITE, STATUS_BAD_REQUEST, STATUS_SUCCESS, Submit},
    ring::{self, Consumer},
    shm::Shared,
};
use xnic_roce::{psn::Psn, sim::XorShift};

const REGION: usize = 4 << 20;

fn endpoint(n: u8) -> Endpoint {
    Endpoint {
        mac: [2, 0, 0, 0, 0, n],
        ip: IpAddr::from([10, 9, 0, n]),
    }
}

struct Side {
    engine: Engine,
    region: Arc<Shared>,
}

/// What side `n`'s region holds at the start: a pattern of its own.
fn initial(n: u8) -> Vec<u8> {
    (0..REGION)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_be_bytes()[n as usize % 4] ^ n)
        .collect()
}

fn side(n: u8, rkey: u32) -> Side {
    let region = Arc::new(Shared::create(c"xnic-engine-test", REGION).unwrap());
    region.write(0, &initial(n));
    let mut engine = Engine::new(endpoint(n));
    let region_id = engine.add_region(region.clone(), rkey).unwrap();
    assert_eq!(region_id, 1, "an engine's first region");
    Side { engine, region }
}

/// Runs `ops` from A's application to B, `loss` in a thousand frames lost each way, and
/// what one side sends in a step beyond `tail` frames (a receiver's ring overflowing).
fn run(ops: &[Submit], loss: u64, tail: usize, seed: u64) -> (Vec<Complete>, Side, Side) {
    let mut rng = XorShift::new(seed);
    let mut a = side(1, 0xaaaa);
    let mut b = side(2, 0xbbbb);
    let config = QpConfig {
        timeout_ns: 2_000,
        retry_limit: 50,
        ..QpConfig::default()
    };
    // A's queue pair 0x100 talks to B's 0x100 (both engines number from there).
    let qa = a
        .engine
        .add_qp(endpoint(2), 0x100, Psn::new(5), Psn::new(9), config)
        .unwrap();
    let qb = b
        .engine
        .add_qp(endpoint(1), qa, Psn::new(9), Psn::new(5), config)
        .unwrap();
    assert_eq!((qa, qb), (0x100, 0x100));
    let (mut sq, sq_fds) = ring::create::<Submit>(c"sq", 256).unwrap();
    let (cq_worker, cq_fds) = ring::create::<Complete>(c"cq", 256).unwrap();
    a.engine
        .attach(qa, Consumer::open(sq_fds).unwrap(), cq_worker);
    let mut cq: Consumer<Complete> = Consumer::open(cq_fds).unwrap();

    let mut pending: VecDeque<Submit> = ops.iter().copied().collect();
    let mut done = Vec::new();
    let (mut ab, mut ba): (VecDeque<Vec<u8>>, VecDeque<Vec<u8>>) = Default::default();
    let mut now = 0u64;
    while done.len() < ops.len() && now < 50_000_000 {
        now += 100;
        while let Some(s) = pending.front().copied() {
            if sq.push(s).is_err() {
                break;
            }
            pending.pop_front();
        }
        sq.publish();
        a.engine.poll(now, &mut |f| {
            if rng.next_u64() % 1000 >= loss && ab.len() < tail {
                ab.push_back(f.to_vec());
            }
            true
        });
        for f in ab.drain(..) {
            b.engine.receive(&f, now);
        }
        b.engine.poll(now, &mut |f| {
            if rng.next_u64() % 1000 >= loss && ba.len() < tail {
                ba.push_back(f.to_vec());
            }
            true
        });
        for f in ba.drain(..) {
            a.engine.receive(&f, now);
        }
        while let Some(c) = cq.pop() {
            done.push(c);
        }
    }
    (done, a, b)
}

fn ops(n: usize, seed: u64, rkey: u32, region_id: u32) -> Vec<Submit> {
    let mut rng = XorShift::new(seed);
    (0..n)
        .map(|i| {
            // Sizes spread over 1 B .. 1 MiB, most small.
            let len = 1 + (rng.next_u64() % (1 << (rng.next_u64() % 21))) as u32;
            let len = len.min(1 << 20);
            let max = (REGION - len as usize) as u64;
            Submit {
                id: i as u64,
                op: if rng.next_u64().is_multiple_of(2) {
                    OP_WRITE
                } else {
                    OP_READ
                },
                _pad: [0; 3],
                local_region: region_id,
                local_offset: rng.next_u64() % max,
                remote_offset: rng.next_u64() % max,
                rkey,
                len,
            }
        })
        .collect()
}

fn check(loss: u64, tail: usize, seed: u64) {
    // Both engines give their first region id 1.
    let list = ops(300, seed, 0xbbbb, 1);
    let (done, a, b) = run(&list, loss, tail, seed);
    // The model: the same starting bytes, each request applied in posting order.
    let (mut model_a, mut model_b) = (initial(1), initial(2));
    for s in &list {
        let (l, r, n) = (
            s.local_offset as usize,
            s.remote_offset as usize,
            s.len as usize,
        );
        if s.op == OP_WRITE {
            let data = model_a[l..l + n].to_vec();
            model_b[r..r + n].copy_from_slice(&data);
        } else {
            let data = model_b[r..r + n].to_vec();
            model_a[l..l + n].copy_from_slice(&data);
        }
    }
    assert_eq!(done.len(), list.len(), "all complete (loss {loss}/1000)");
    for (i, c) in done.iter().enumerate() {
        assert_eq!((c.id, c.status), (i as u64, STATUS_SUCCESS), "{c:?}");
    }
    let mut got_a = vec![0u8; REGION];
    let mut got_b = vec![0u8; REGION];
    a.region.read(0, &mut got_a);
    b.region.read(0, &mut got_b);
    assert!(got_b == model_b, "B's region differs from the model");
    assert!(
        got_a == model_a,
        "A's region (READ results) differs from the model"
    );
    let stats = a.engine.stats();
    if loss > 0 {
        assert!(stats.retransmitted > 0, "{stats:?}");
    }
}

#[test]
fn writes_and_reads_of_every_size_arrive_exactly() {
    check(0, usize::MAX, 11);
}

#[test]
fn the_same_through_one_percent_and_five_percent_loss() {
    check(10, usize::MAX, 12);
    check(50, usize::MAX, 13);
}

#[test]
fn a_request_outside_its_local_region_completes_as_bad_and_changes_nothing() {
    let mut s = ops(1, 1, 0xbbbb, 1);
    s[0].local_offset = REGION as u64 - 1;
    s[0].len = 2;
    let (done, _a, b) = run(&s, 0, usize::MAX, 3);
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].status, STATUS_BAD_REQUEST);
    let mut got = vec![0u8; REGION];
    b.region.read(0, &mut got);
    assert!(got == initial(2));
}

#[test]
fn the_same_when_bursts_overflow_the_receivers_ring() {
    for (tail, seed) in [(100, 21), (40, 22), (7, 23)] {
        check(0, tail, seed);
    }
}
