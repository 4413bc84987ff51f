# One EKS cluster per organization: private API endpoint, Kubernetes Secrets encrypted with a KMS key of
# this organization, nodes in private subnets, egress through NAT (fixed public IPs the server can allow-list).
# The server organization also gets Elastic IPs for the FLARE server's Network Load Balancer.

data "aws_caller_identity" "current" {}

locals {
  name = "fedkit-${var.organization}"
  azs  = var.availability_zones
}

module "vpc" {
  # checkov:skip=CKV_TF_1:Registry module pinned to an exact version; published registry versions are immutable.
  source  = "terraform-aws-modules/vpc/aws"
  version = "5.17.0"

  name            = local.name
  cidr            = var.vpc_cidr
  azs             = local.azs
  private_subnets = [for i, _ in local.azs : cidrsubnet(var.vpc_cidr, 4, i)]
  public_subnets  = [for i, _ in local.azs : cidrsubnet(var.vpc_cidr, 8, 48 + i)]

  enable_nat_gateway     = true
  one_nat_gateway_per_az = true
  enable_dns_hostnames   = true

  enable_flow_log                                 = true
  create_flow_log_cloudwatch_log_group            = true
  create_flow_log_cloudwatch_iam_role             = true
  flow_log_cloudwatch_log_group_retention_in_days = 365
  flow_log_cloudwatch_log_group_kms_key_id        = aws_kms_key.cluster.arn

  manage_default_security_group  = true
  default_security_group_ingress = []
  default_security_group_egress  = []

  public_subnet_tags  = { "kubernetes.io/role/elb" = 1 }
  private_subnet_tags = { "kubernetes.io/role/internal-elb" = 1 }
}

resource "aws_kms_key" "cluster" {
  description         = "${local.name}: EKS Secrets (startup kits) and VPC flow logs"
  enable_key_rotation = true
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid       = "AccountAdministers"
        Effect    = "Allow"
        Principal = { AWS = "arn:aws:iam::${data.aws_caller_identity.current.account_id}:root" }
        Action    = "kms:*"
        Resource  = "*"
      },
      {
        Sid       = "FlowLogs"
        Effect    = "Allow"
        Principal = { Service = "logs.${var.region}.amazonaws.com" }
        Action    = ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"]
        Resource  = "*"
      },
    ]
  })
}

module "eks" {
  # checkov:skip=CKV_TF_1:Registry module pinned to an exact version; published registry versions are immutable.
  source  = "terraform-aws-modules/eks/aws"
  version = "20.31.6"

  cluster_name    = local.name
  cluster_version = var.kubernetes_version

  cluster_endpoint_public_access  = false
  cluster_endpoint_private_access = true
  cluster_security_group_additional_rules = {
    admin_https = {
      description = "Organization admins reach the private API endpoint"
      type        = "ingress"
      protocol    = "tcp"
      from_port   = 443
      to_port     = 443
      cidr_blocks = var.admin_cidrs
    }
  }

  create_kms_key = false
  cluster_encryption_config = {
    provider_key_arn = aws_kms_key.cluster.arn
    resources        = ["secrets"]
  }
  cluster_enabled_log_types = ["api", "audit", "authenticator", "controllerManager", "scheduler"]

  vpc_id     = module.vpc.vpc_id
  subnet_ids = module.vpc.private_subnets

  enable_irsa                              = true
  enable_cluster_creator_admin_permissions = true

  eks_managed_node_groups = {
    default = {
      instance_types = [var.node_instance_type]
      min_size       = 1
      max_size       = 3
      desired_size   = 2
      metadata_options = {
        http_tokens                 = "required"
        http_put_response_hop_limit = 1
      }
    }
  }
}

# Server organization: fixed public addresses for the FLARE server's NLB (AWS Load Balancer Controller,
# Service annotation aws-load-balancer-eip-allocations), so the hospitals can allow exactly these.
resource "aws_eip" "server" {
  # checkov:skip=CKV2_AWS_19:These EIPs are attached to the FLARE server's Network Load Balancer by the AWS Load Balancer Controller, not to EC2 instances.
  count  = var.role == "server" ? length(local.azs) : 0
  domain = "vpc"
  tags   = { Name = "${local.name}-server-${count.index}" }
}

# Hospital: read-only access to its own data bucket for the site pod's service account (IRSA).
data "aws_iam_policy_document" "site_assume" {
  count = var.role == "site" && var.data_bucket != "" ? 1 : 0
  statement {
    actions = ["sts:AssumeRoleWithWebIdentity"]
    principals {
      type        = "Federated"
      identifiers = [module.eks.oidc_provider_arn]
    }
    condition {
      test     = "StringEquals"
      variable = "${module.eks.oidc_provider}:sub"
      values   = ["system:serviceaccount:fedkit:fedkit-site-${var.organization}"]
    }
    condition {
      test     = "StringEquals"
      variable = "${module.eks.oidc_provider}:aud"
      values   = ["sts.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "site_data" {
  count              = length(data.aws_iam_policy_document.site_assume)
  name               = "${local.name}-site-data-read"
  assume_role_policy = data.aws_iam_policy_document.site_assume[0].json
}

data "aws_iam_policy_document" "site_data" {
  count = length(data.aws_iam_policy_document.site_assume)
  statement {
    actions   = ["s3:ListBucket"]
    resources = ["arn:aws:s3:::${var.data_bucket}"]
  }
  statement {
    actions   = ["s3:GetObject"]
    resources = ["arn:aws:s3:::${var.data_bucket}/*"]
  }
}

resource "aws_iam_role_policy" "site_data" {
  count  = length(aws_iam_role.site_data)
  name   = "read-own-data-bucket"
  role   = aws_iam_role.site_data[0].id
  policy = data.aws_iam_policy_document.site_data[0].json
}
