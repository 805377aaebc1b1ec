"""Allow ``python -m policyengine``."""

from policyengine.cli import main

if __name__ == "__main__":
    main()
