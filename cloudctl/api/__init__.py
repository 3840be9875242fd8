"""The EC2-compatible Query API of the Cloud Controller (issue 11).

- sigv4: AWS Signature Version 4 checking (shared with the S3 gateway);
- app: the WSGI application (parameters, authentication, dispatch, EC2 XML);
- actions/: the handlers, one per EC2 action, registered with @action;
- params, render, errors: EC2's parameter encoding, XML and error codes;
- server: `cloudctl api serve` under gunicorn.
"""
