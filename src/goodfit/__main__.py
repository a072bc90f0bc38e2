from goodfit.cli import main

main()
