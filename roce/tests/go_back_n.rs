//! A requester and a responder over a network that loses, duplicates and reorders packets,
//! against a model: a memory that takes every WRITE and answers every READ in the order
//! they were posted. Whatever the network does, every request completes, in order, and
//! the bytes are exactly the model's.

use std::{collections::VecDeque, net::IpAddr};

use proptest::prelude::*;
use xnic_roce::{
    headers::NakCode,
    packet::{Path, build, parse},
    psn::Psn,
    requester::{Config, Local, Operation, Requester, RequesterStats, Status, WorkRequest},
    responder::{Regions, Responder},
    sim::XorShift,
};

const REGION: usize = 64 * 1024;
const RKEY: u32 = 0x5151;
const MTU: u32 = 256;

struct Memory(Vec<u8>);

impl Local for Memory {
    fn read(&self, offset: u64, out: &mut [u8]) {
        out.copy_from_slice(&self.0[offset as usize..offset as usize + out.len()]);
    }
    fn write(&mut self, offset: u64, data: &[u8]) {
        self.0[offset as usize..offset as usize + data.len()].copy_from_slice(data);
    }
}

impl Regions for Memory {
    fn check(&self, rkey: u32, va: u64, len: u32, _write: bool) -> Result<(), NakCode> {
        if rkey != RKEY {
            return Err(NakCode::RemoteAccessError);
        }
        match va.checked_add(u64::from(len)) {
            Some(end) if end <= self.0.len() as u64 => Ok(()),
            _ => Err(NakCode::RemoteAccessError),
        }
    }
    fn write(&mut self, _rkey: u32, va: u64, data: &[u8]) {
        Local::write(self, va, data);
    }
    fn read(&self, _rkey: u32, va: u64, out: &mut [u8]) {
        Local::read(self, va, out);
    }
}

/// One direction of the network: frames in flight.
struct Link {
    queue: VecDeque<Vec<u8>>,
    loss: u32,
    dup: u32,
    reorder: u32,
}

impl Link {
    fn send(&mut self, frame: Vec<u8>, rng: &mut XorShift) {
        if rng.chance(u64::from(self.loss), 100) {
            return;
        }
        if rng.chance(u64::from(self.dup), 100) {
            self.queue.push_back(frame.clone());
        }
        self.queue.push_back(frame);
        let n = self.queue.len();
        if n >= 2 && rng.chance(u64::from(self.reorder), 100) {
            self.queue.swap(n - 1, n - 2);
        }
    }
}

fn path(a: u8, b: u8) -> Path {
    Path {
        src_mac: [2, 0, 0, 0, 0, a],
        dst_mac: [2, 0, 0, 0, 0, b],
        src_ip: IpAddr::from([10, 0, 0, a]),
        dst_ip: IpAddr::from([10, 0, 0, b]),
        src_port: 0xc000,
    }
}

/// What a run ended with.
struct Outcome {
    completions: Vec<(u64, Status)>,
    local: Vec<u8>,
    model_local: Vec<u8>,
    remote: Vec<u8>,
    model_remote: Vec<u8>,
    stats: RequesterStats,
}

/// Runs `ops` (op, length, remote offset, local offset) through a network with `loss`%
/// loss each way (plus duplicates and reordering), next to the model.
fn run(ops: &[(Operation, u32, u64, u64)], loss: u32, seed: u64) -> Outcome {
    let mut rng = XorShift::new(seed);
    let start = Psn::new((seed >> 8) as u32);
    let mut req = Requester::new(Config {
        dest_qp: 0x22,
        start_psn: start,
        mtu: MTU,
        window: 32,
        timeout_ns: 40,
        retry_limit: 64,
    });
    let mut resp = Responder::new(0x11, start, MTU);
    let fill = |salt: u8| -> Vec<u8> {
        (0..REGION)
            .map(|i| (i as u8).wrapping_mul(31) ^ salt)
            .collect()
    };
    let mut local = Memory(fill(1));
    let mut remote = Memory(fill(2));
    // The model: the same memories, each request applied in order, at once.
    let (mut model_local, mut model_remote) = (fill(1), fill(2));
    for (i, (op, len, r, l)) in ops.iter().enumerate() {
        let (r, l, n) = (*r as usize, *l as usize, *len as usize);
        match op {
            Operation::Write => {
                let data = model_local[l..l + n].to_vec();
                model_remote[r..r + n].copy_from_slice(&data);
            }
            Operation::Read => {
                let data = model_remote[r..r + n].to_vec();
                model_local[l..l + n].copy_from_slice(&data);
            }
        }
        req.post(WorkRequest {
            id: i as u64,
            op: *op,
            local: l as u64,
            remote: r as u64,
            rkey: RKEY,
            len: *len,
        })
        .unwrap();
    }
    let mut to_resp = Link {
        queue: VecDeque::new(),
        loss,
        dup: loss / 2,
        reorder: loss,
    };
    let mut to_req = Link {
        queue: VecDeque::new(),
        loss,
        dup: loss / 2,
        reorder: loss,
    };
    let mut done = Vec::new();
    let mut buf = Vec::new();
    for now in 0..200_000u64 {
        for _ in 0..4 {
            let Some(p) = req.next_packet(&local, now, &mut buf) else {
                break;
            };
            let mut frame = Vec::new();
            build(&path(1, 2), &p, &mut frame);
            to_resp.send(frame, &mut rng);
        }
        for _ in 0..4 {
            let Some(frame) = to_resp.queue.pop_front() else {
                break;
            };
            let p = parse(&frame).expect("a frame we built");
            let _ = resp.receive(&p.packet, &mut remote);
        }
        for _ in 0..4 {
            let Some(p) = resp.next_packet(&remote, &mut buf) else {
                break;
            };
            let mut frame = Vec::new();
            build(&path(2, 1), &p, &mut frame);
            to_req.send(frame, &mut rng);
        }
        for _ in 0..4 {
            let Some(frame) = to_req.queue.pop_front() else {
                break;
            };
            let p = parse(&frame).expect("a frame we built");
            req.receive(&p.packet, &mut local, now);
        }
        req.tick(now);
        done.extend(req.completions().map(|c| (c.id, c.status)));
        if done.len() == ops.len() {
            break;
        }
    }
    Outcome {
        completions: done,
        local: local.0,
        model_local,
        remote: remote.0,
        model_remote,
        stats: req.stats(),
    }
}

fn op_strategy() -> impl Strategy<Value = (Operation, u32, u64, u64)> {
    (
        prop::sample::select(vec![Operation::Write, Operation::Read]),
        1u32..20_000,
        0u64..(REGION as u64 - 20_000),
        0u64..(REGION as u64 - 20_000),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn every_request_completes_exactly_whatever_the_network_does(
        ops in prop::collection::vec(op_strategy(), 1..40),
        loss in prop::sample::select(vec![0u32, 1, 5, 20]),
        seed in any::<u64>(),
    ) {
        let out = run(&ops, loss, seed);
        let want: Vec<(u64, Status)> = (0..ops.len() as u64).map(|i| (i, Status::Success)).collect();
        prop_assert_eq!(out.completions, want);
        prop_assert!(out.remote == out.model_remote, "remote memory differs from the model");
        prop_assert!(out.local == out.model_local, "local memory (READ results) differs from the model");
        // The network really lost what it was told to.
        if loss == 20 && out.stats.sent > 100 {
            prop_assert!(out.stats.retransmitted > 0, "{:?}", out.stats);
        }
    }
}

#[test]
fn a_wrong_key_is_refused_and_nothing_is_written() {
    let mut req = Requester::new(Config {
        dest_qp: 0x22,
        start_psn: Psn::new(0xff_fffe),
        mtu: MTU,
        window: 32,
        timeout_ns: 40,
        retry_limit: 3,
    });
    let mut resp = Responder::new(0x11, Psn::new(0xff_fffe), MTU);
    let mut local = Memory(vec![7; REGION]);
    let mut remote = Memory(vec![0; REGION]);
    for (id, rkey) in [(1, RKEY), (2, RKEY + 1), (3, RKEY)] {
        req.post(WorkRequest {
            id,
            op: Operation::Write,
            local: 0,
            remote: 0,
            rkey,
            len: 1000,
        })
        .unwrap();
    }
    let mut buf = Vec::new();
    let mut done = Vec::new();
    for now in 0..1000 {
        while let Some(p) = req.next_packet(&local, now, &mut buf) {
            let mut f = Vec::new();
            build(&path(1, 2), &p, &mut f);
            let _ = resp.receive(&parse(&f).unwrap().packet, &mut remote);
        }
        while let Some(p) = resp.next_packet(&remote, &mut buf) {
            let mut f = Vec::new();
            build(&path(2, 1), &p, &mut f);
            req.receive(&parse(&f).unwrap().packet, &mut local, now);
        }
        req.tick(now);
        done.extend(req.completions().map(|c| (c.id, c.status)));
    }
    assert_eq!(
        done,
        vec![
            (1, Status::Success),
            (2, Status::Refused(NakCode::RemoteAccessError)),
            (3, Status::Flushed)
        ]
    );
    assert!(resp.stopped() && req.stopped());
    // The first WRITE landed; the refused one's bytes did not (the third never ran).
    assert_eq!(&remote.0[..1000], &[7; 1000][..]);
    assert_eq!(remote.0[1000], 0);
}

#[test]
fn a_peer_that_never_answers_fails_the_request_after_the_retry_limit() {
    let mut req = Requester::new(Config {
        dest_qp: 0x22,
        start_psn: Psn::new(0),
        mtu: MTU,
        window: 32,
        timeout_ns: 10,
        retry_limit: 3,
    });
    let local = Memory(vec![7; REGION]);
    for id in 0..2 {
        req.post(WorkRequest {
            id,
            op: Operation::Read,
            local: 0,
            remote: 0,
            rkey: RKEY,
            len: 600,
        })
        .unwrap();
    }
    let mut buf = Vec::new();
    let mut done = Vec::new();
    let mut sent = 0;
    for now in 0..1000 {
        while req.next_packet(&local, now, &mut buf).is_some() {
            sent += 1;
        }
        req.tick(now);
        done.extend(req.completions().map(|c| (c.id, c.status)));
    }
    assert_eq!(done, vec![(0, Status::RetryExceeded), (1, Status::Flushed)]);
    // Two requests, sent once and then again after each of three timeouts.
    assert_eq!(sent, 8);
    assert_eq!(req.stats().timeouts, 4);
}
