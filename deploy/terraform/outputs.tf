output "cluster_name" {
  description = "EKS cluster name (aws eks update-kubeconfig --name ...)."
  value       = module.eks.cluster_name
}

output "cluster_endpoint" {
  description = "Private EKS API endpoint (reachable from the VPC and admin_cidrs only)."
  value       = module.eks.cluster_endpoint
}

output "egress_ips" {
  description = "This organization's NAT public IPs: what the server's loadBalancerSourceRanges must allow."
  value       = module.vpc.nat_public_ips
}

output "server_ips" {
  description = "Server organization: the FLARE server's public IPs (hospitals' NetworkPolicy egress ipBlocks, DNS A records)."
  value       = aws_eip.server[*].public_ip
}

output "server_eip_allocation_ids" {
  description = "Server organization: for the Service annotation service.beta.kubernetes.io/aws-load-balancer-eip-allocations."
  value       = join(",", aws_eip.server[*].allocation_id)
}

output "server_endpoint" {
  description = "Server organization: host:port the sites connect to (point the DNS name's A records at server_ips)."
  value       = var.role == "server" ? "${var.server_dns_name}:8002" : null
}

output "site_data_role_arn" {
  description = "Hospital: IAM role the site pod assumes (IRSA) to read its own data bucket."
  value       = one(aws_iam_role.site_data[*].arn)
}
