"""Calls CloudWatch through the AWS CLI's own botocore with a forced wire protocol.

usage: cw_protocol.py ENDPOINT PROTOCOL OPERATION JSON_PARAMS
PROTOCOL is smithy-rpc-v2-cbor, json or query (the model lists all three). Prints the parsed
reply as JSON (datetimes as ISO text), or `ERROR <code> <message>` and exits 1.
Signs with AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY from the environment.
"""
import json
import os
import sys

from awscli.botocore import loaders
from awscli.botocore.session import Session

endpoint, protocol, op, params = sys.argv[1:5]
orig = loaders.Loader.load_service_model


def load(self, service_name, type_name, api_version=None):
    m = orig(self, service_name, type_name, api_version)
    if service_name == "cloudwatch" and type_name == "service-2":
        m = dict(m)
        m["metadata"] = dict(m["metadata"], protocol=protocol, protocols=[protocol])
    return m


loaders.Loader.load_service_model = load
client = Session().create_client(
    "cloudwatch", region_name="us-east-1", endpoint_url=endpoint,
    aws_access_key_id=os.environ["AWS_ACCESS_KEY_ID"],
    aws_secret_access_key=os.environ["AWS_SECRET_ACCESS_KEY"])
try:
    reply = getattr(client, op)(**json.loads(params))
except Exception as e:  # modeled errors are ClientError subclasses
    if not hasattr(e, "response"):
        raise
    print("ERROR", e.response["Error"]["Code"], e.response["Error"].get("Message", ""))
    sys.exit(1)
reply.pop("ResponseMetadata", None)
print(json.dumps(reply, default=lambda d: d.isoformat()))
