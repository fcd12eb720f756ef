fn main() {
    let plan = sse_cluster_sim::scenarios::partition_while_publishing();
    let outcome = sse_cluster_sim::run(&plan, 1).unwrap();
    print!("{}", sse_cluster_sim::trace::serialize(&outcome.records));
    println!("{:#?}", outcome.report);
    println!("{}", outcome.summary());
}
