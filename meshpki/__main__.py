"""`python -m meshpki` runs the same CLI as the `meshpki` script."""

from meshpki.cli import main

main()
