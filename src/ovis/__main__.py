from ovis.cli import main

main()
