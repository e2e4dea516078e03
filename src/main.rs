fn main() {
    println!("cloudmount: under construction");
}
