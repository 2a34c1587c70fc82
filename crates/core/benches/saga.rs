//! Micro-benchmarks of the hot, pure parts of a saga: the state machine's transitions and the
//! message codec. `cargo bench --bench saga`; regressions show against criterion's last run.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use ecommerce_core::saga::machine::{self, Input};
use ecommerce_core::saga::messages::{Body, Command, Envelope, ReplyKind, StockLine};
use ecommerce_core::saga::{SagaDefinition, SagaTiming};
use uuid::Uuid;

fn reply(kind: ReplyKind) -> Input {
    Input::Reply { kind, reason: None }
}

fn state_machine(c: &mut Criterion) {
    let def = SagaDefinition::checkout(SagaTiming::default());
    let happy = [
        reply(ReplyKind::StockReserved),
        reply(ReplyKind::PaymentAuthorized),
        reply(ReplyKind::PaymentCaptured),
    ];
    c.bench_function("machine: happy checkout, start to completed", |b| {
        b.iter(|| {
            let mut t = machine::start(black_box(&def));
            for input in &happy {
                t = machine::handle(&def, &t.state, input).expect("applies");
            }
            black_box(t)
        })
    });
    let declined = [
        reply(ReplyKind::StockReserved),
        Input::Reply { kind: ReplyKind::PaymentDeclined, reason: Some("card declined".into()) },
        reply(ReplyKind::StockReleased),
    ];
    c.bench_function("machine: declined checkout, start to compensated", |b| {
        b.iter(|| {
            let mut t = machine::start(black_box(&def));
            for input in &declined {
                t = machine::handle(&def, &t.state, input).expect("applies");
            }
            black_box(t)
        })
    });
}

fn codec(c: &mut Criterion) {
    let lines = vec![
        StockLine { sku: "MUG-001".into(), quantity: 2 },
        StockLine { sku: "TEE-002".into(), quantity: 1 },
    ];
    let envelope = Envelope::new(
        Uuid::now_v7(),
        Uuid::now_v7(),
        "4bf92f3577b34da6a3ce929d0e0e4736",
        Body::Command(Command::ReserveStock { lines }),
    );
    let bytes = envelope.encode();
    c.bench_function("codec: encode a reserve-stock command", |b| {
        b.iter(|| black_box(black_box(&envelope).encode()))
    });
    c.bench_function("codec: decode a reserve-stock command", |b| {
        b.iter(|| black_box(Envelope::decode(black_box(&bytes)).expect("decodes")))
    });
}

criterion_group!(benches, state_machine, codec);
criterion_main!(benches);
