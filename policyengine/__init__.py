"""policyengine: a policy-as-code gate for production deploys that leaves proof."""

__version__ = "0.1.0"
