#!/usr/bin/env python3
"""Translates template.yaml the way CloudFormation deploys it (AWS::LanguageExtensions, then the
SAM transform) for classic Lambda and for Lambda Managed Instances, and checks what each
deployment gets: the function on a capacity provider or not, and the state machine allowed to
invoke it. `make lint-template` runs it; it needs the SAM CLI in the project's venv.

The SAM CLI's offline copy of AWS::LanguageExtensions is the one checked here: it follows the
hosted transform, which resolves the Fn::If around CapacityProviderConfig (SAM alone refuses an
intrinsic function there) and empties Refs inside resources whose condition is false.

    .venv/bin/python scripts/check_template.py template.yaml
"""
import logging
import sys

from samcli.lib.translate.sam_template_validator import SamTemplateValidator
from samcli.yamlhelper import yaml_parse

PROVIDER = "arn:aws:lambda:us-east-1:123456789012:capacity-provider:tilepredict"
REQUIRED = {"ModelBucket": "models", "TileUrl": "https://tiles.example/{z}/{x}/{y}.jpg"}

# (name, parameters, expected CapacityProviderConfig of the function or None, state machine?)
CASES = [
    ("classic Lambda, the defaults", {}, None, False),
    (
        "Managed Instances",
        {"CapacityProviderArn": PROVIDER},
        {
            "LambdaManagedInstancesCapacityProviderConfig": {
                "CapacityProviderArn": PROVIDER,
                "PerExecutionEnvironmentMaxConcurrency": 16,
                "ExecutionEnvironmentMemoryGiBPerVCpu": 2,
            }
        },
        False,
    ),
    (
        "Managed Instances with a register and the batch state machine",
        {
            "CapacityProviderArn": PROVIDER,
            "MaxConcurrencyPerEnvironment": "64",
            "MemoryGiBPerVCpu": "4",
            "MemorySize": "8192",
            "RegistryUri": "s3://registers/buildings.csv",
            "BatchBucket": "batches",
        },
        {
            "LambdaManagedInstancesCapacityProviderConfig": {
                "CapacityProviderArn": PROVIDER,
                "PerExecutionEnvironmentMaxConcurrency": 64,
                "ExecutionEnvironmentMemoryGiBPerVCpu": 4,
            }
        },
        True,
    ),
    ("classic Lambda with the batch state machine", {"BatchBucket": "batches"}, None, True),
]


def numbers(value):
    """Parameter values arrive as strings or numbers depending on the path: compare as numbers."""
    if isinstance(value, dict):
        return {k: numbers(v) for k, v in value.items()}
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return value


def translate(text, parameters):
    validator = SamTemplateValidator(
        yaml_parse(text),
        managed_policy_loader=None,
        region="us-east-1",
        parameter_overrides={**REQUIRED, **parameters},
        language_extensions_enabled=True,
    )
    return yaml_parse(validator.get_translated_template_if_valid())


def check(text, name, parameters, expected, state_machine):
    resources = translate(text, parameters)["Resources"]
    functions = [r for r in resources.values() if r["Type"] == "AWS::Lambda::Function"]
    assert len(functions) == 1, f"{name}: {len(functions)} functions"
    got = functions[0]["Properties"].get("CapacityProviderConfig")
    assert numbers(got) == expected, f"{name}: CapacityProviderConfig {got}, expected {expected}"
    machines = [r for r in resources.values() if r["Type"] == "AWS::StepFunctions::StateMachine"]
    if state_machine:
        assert len(machines) == 1, f"{name}: {len(machines)} state machines"
        policies = [r for r in resources.values() if r["Type"] == "AWS::IAM::Role"]
        text_of = str(policies)
        assert "lambda:InvokeFunction" in text_of, f"{name}: the state machine may not invoke"
    print(f"ok: {name}")


def main():
    # The translator's metrics logger complains about metrics it never publishes offline.
    logging.getLogger("samtranslator.metrics.metrics").setLevel(logging.ERROR)
    path = sys.argv[1] if len(sys.argv) > 1 else "template.yaml"
    text = open(path, encoding="utf-8").read()
    for name, parameters, expected, state_machine in CASES:
        check(text, name, parameters, expected, state_machine)


if __name__ == "__main__":
    main()
