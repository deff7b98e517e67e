from meshpki.cli import main

main()
