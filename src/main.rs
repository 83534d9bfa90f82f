fn main() {
    println!("pm2-trace");
}
