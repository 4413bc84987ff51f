terraform {
  required_version = ">= 1.6.0, < 2.0.0"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.83.0, < 6.0.0"
    }
  }
}

provider "aws" {
  region = var.region
  default_tags {
    tags = {
      project      = "fedkit"
      organization = var.organization
    }
  }
}
