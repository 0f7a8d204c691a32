from metarl.cli import main

main()
