"""``keysweep iac``: long-lived key resources in Infrastructure-as-Code, found before they are deployed.

Terraform (``*.tf``, ``*.tf.json``), CloudFormation templates (YAML or JSON, CDK output included) and Terraform
state (``*.tfstate``, where the secret of every key Terraform created sits in plain text). Each reader yields
:class:`IacFinding` values; :func:`scan_iac` walks the paths and picks the reader by file name and content.
"""

from keysweep.iac.model import IacFinding, IacResult
from keysweep.iac.scan import scan_iac

__all__ = ["IacFinding", "IacResult", "scan_iac"]
