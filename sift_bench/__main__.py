from sift_bench.cli import app

app()
