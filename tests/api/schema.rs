/// The committed SDL must match the code. Regenerate with `make schema`.
#[test]
fn committed_schema_is_up_to_date() {
    let committed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/schema/schema.graphql"))
        .expect("schema/schema.graphql exists");
    let current = ecommerce_saga::graphql::sdl();
    assert!(
        committed == current,
        "schema/schema.graphql is out of date: run `make schema` (cargo run --bin api -- print-schema > schema/schema.graphql)"
    );
}
