from ftqueue.cli import main

main()
